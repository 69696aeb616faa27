package policy

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
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
	return f.n.resolv.resolve(ctx, f.n.cfg.Resolver, host)
}

// StaticFacts answers a Policy's questions without a network, for a tool
// asking whether something would be allowed: the synthetic addresses and
// forwarded DNS answers are what the caller says they are, and names are
// looked up with Resolver.
type StaticFacts struct {
	// Synthetic maps the synthetic addresses handed out to their names.
	Synthetic map[netip.Addr]string
	// Forwarded maps addresses to the names forwarded DNS gave them.
	Forwarded map[netip.Addr][]string
	// Resolver looks names up; nil uses net.DefaultResolver.
	Resolver Resolver
}

func (f StaticFacts) SyntheticName(a netip.Addr) (string, bool) {
	name, ok := f.Synthetic[a.Unmap()]
	return name, ok
}

func (f StaticFacts) DNSNames(a netip.Addr) []string { return f.Forwarded[a.Unmap()] }

func (f StaticFacts) Resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	r := f.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	return lookup(ctx, r, host)
}

// lookup resolves host with r; an IP literal is its own address.
func lookup(ctx context.Context, r Resolver, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addrs, err := r.LookupNetIP(lctx, "ip", host)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s has no addresses", host)
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	return addrs, nil
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

// resolve looks host up with r, or answers from the cache; an IP literal
// is its own address.
func (c *resolveCache) resolve(ctx context.Context, r Resolver, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	c.mu.Lock()
	if e, ok := c.m[host]; ok && time.Now().Before(e.exp) {
		c.mu.Unlock()
		return e.addrs, nil
	}
	c.mu.Unlock()
	addrs, err := lookup(ctx, r, host)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) > 4096 {
		c.m = map[string]resolveEntry{}
	}
	c.m[host] = resolveEntry{addrs: addrs, exp: time.Now().Add(resolveTTL)}
	c.mu.Unlock()
	return addrs, nil
}

// synthPrefix is the pool synthetic DNS answers come from. It lies inside
// the benchmark range 198.18.0.0/15, which upstream dials never reach.
var synthPrefix = netip.MustParsePrefix("198.19.0.0/16")

// synthPool maps allowed names to stable addresses from synthPrefix, and
// back: a flow to a synthetic address is known by name, not by IP.
type synthPool struct {
	mu     sync.Mutex
	next   uint32
	byName map[string]netip.Addr
	byAddr map[netip.Addr]string
}

func newSynthPool() *synthPool {
	return &synthPool{next: 1, byName: map[string]netip.Addr{}, byAddr: map[netip.Addr]string{}}
}

func (p *synthPool) addrFor(name string) (netip.Addr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a, ok := p.byName[name]; ok {
		return a, true
	}
	size := uint32(1) << (32 - synthPrefix.Bits())
	if p.next >= size-1 {
		return netip.Addr{}, false
	}
	base := synthPrefix.Addr().As4()
	v := binary.BigEndian.Uint32(base[:]) + p.next
	p.next++
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	a := netip.AddrFrom4(b)
	p.byName[name] = a
	p.byAddr[a] = name
	return a, true
}

func (p *synthPool) nameFor(a netip.Addr) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	name, ok := p.byAddr[a.Unmap()]
	return name, ok
}

// maxDNSRecords bounds the (address, name) pairs dnsRecords keeps.
const maxDNSRecords = 16384

// dnsRecords remembers which names the guest was told an address belongs
// to (net.dns=trusted|open), so that a flow to that address can be checked
// against the name the guest asked for. It holds at most maxDNSRecords
// (address, name) pairs in all: a guest asking an upstream it controls
// for endless names of one address cannot grow it.
type dnsRecords struct {
	mu    sync.Mutex
	m     map[netip.Addr]map[string]time.Time
	total int
}

func (r *dnsRecords) add(name string, a netip.Addr, ttl time.Duration) {
	if ttl < time.Minute {
		ttl = time.Minute
	}
	if ttl > time.Hour {
		ttl = time.Hour
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[netip.Addr]map[string]time.Time{}
	}
	a = a.Unmap()
	if _, ok := r.m[a][name]; !ok && r.total >= maxDNSRecords {
		r.evictLocked(now)
	}
	names := r.m[a]
	if names == nil {
		names = map[string]time.Time{}
		r.m[a] = names
	}
	if _, ok := names[name]; !ok {
		r.total++
	}
	names[name] = now.Add(ttl)
}

// evictLocked drops the expired pairs, then arbitrary ones until a quarter
// of the room is free, so a flood does not pay for a sweep per answer.
func (r *dnsRecords) evictLocked(now time.Time) {
	for k, names := range r.m {
		for n, exp := range names {
			if now.After(exp) {
				delete(names, n)
				r.total--
			}
		}
		if len(names) == 0 {
			delete(r.m, k)
		}
	}
	for k, names := range r.m {
		if r.total < maxDNSRecords*3/4 {
			break
		}
		r.total -= len(names)
		delete(r.m, k)
	}
}

func (r *dnsRecords) names(a netip.Addr) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	var out []string
	for n, exp := range r.m[a.Unmap()] {
		if now.Before(exp) {
			out = append(out, n)
		}
	}
	return out
}
