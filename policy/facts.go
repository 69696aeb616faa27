package policy

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// netFacts answers the decisions' questions (Facts) from what this
// network knows: the synthetic pool, the forwarded DNS answers it
// recorded, and its cached upstream resolver.
type netFacts struct{ n *Network }

func (f netFacts) SyntheticName(a netip.Addr) (string, bool) { return f.n.synth.nameFor(a) }

func (f netFacts) DNSNames(a netip.Addr) []string { return f.n.records.names(a) }

func (f netFacts) Resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	return f.n.resolve(ctx, host)
}

// resolveCache keeps upstream lookups briefly so a keep-alive client does
// not cost one lookup per request.
type resolveCache struct {
	mu sync.Mutex
	m  map[string]resolveEntry
}

type resolveEntry struct {
	addrs []netip.Addr
	exp   time.Time
}

const resolveTTL = 30 * time.Second

func (n *Network) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	c := &n.resolv
	c.mu.Lock()
	if e, ok := c.m[host]; ok && time.Now().Before(e.exp) {
		c.mu.Unlock()
		return e.addrs, nil
	}
	c.mu.Unlock()
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addrs, err := n.cfg.Resolver.LookupNetIP(lctx, "ip", host)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s has no addresses", host)
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) > 4096 {
		c.m = map[string]resolveEntry{}
	}
	c.m[host] = resolveEntry{addrs: addrs, exp: time.Now().Add(resolveTTL)}
	c.mu.Unlock()
	return addrs, nil
}
