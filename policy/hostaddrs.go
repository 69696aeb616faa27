package policy

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// hostAddrsTTL is how long a reading of the host's addresses is used.
// Addresses change by the operator's hand (docker network connect, DHCP),
// never the guest's, so a second's staleness cannot be steered.
const hostAddrsTTL = time.Second

// hostAddrSet caches Config.HostAddrs.
type hostAddrSet struct {
	read func(context.Context) ([]netip.Addr, error)
	warn func(msg string, args ...any)

	mu      sync.Mutex
	addrs   map[netip.Addr]struct{}
	readAt  time.Time
	lastErr string
}

func newHostAddrSet(ctx context.Context, read func(context.Context) ([]netip.Addr, error), warn func(string, ...any)) (*hostAddrSet, error) {
	s := &hostAddrSet{read: read, warn: warn}
	addrs, err := read(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: read the host's addresses: %w", err)
	}
	s.set(addrs)
	return s, nil
}

func (s *hostAddrSet) set(addrs []netip.Addr) {
	m := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		m[a.WithZone("").Unmap()] = struct{}{}
	}
	s.addrs, s.readAt = m, time.Now()
}

// has reports whether a is one of the host's addresses, reading them
// again once the last reading is older than hostAddrsTTL. Readers wait for
// a reading in progress rather than use a stale set.
func (s *hostAddrSet) has(a netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.readAt) > hostAddrsTTL {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		addrs, err := s.read(ctx)
		cancel()
		if err != nil {
			// Keep the last set (addresses are rarely removed) and say
			// so once per distinct error.
			s.readAt = time.Now()
			if msg := err.Error(); msg != s.lastErr {
				s.lastErr = msg
				s.warn("reading the host's addresses failed; using the last reading", "error", err)
			}
		} else {
			s.set(addrs)
		}
	}
	_, ok := s.addrs[a]
	return ok
}
