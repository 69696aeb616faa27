package config

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/earendil-works/gondolin-containerd/policy"
)

// Egress is the part of a container's egress policy the runtime config
// decides, on top of the container's rules: the policy.Config the shim
// runs and that `gondolin policy test` asks, so both decide alike.
type Egress struct {
	// Config holds the rules with the config's limits, upstream DNS
	// servers and the upstream_hosts names (the operator vouches for
	// their addresses, so they may be internal). The caller adds what
	// only it has: dialer, resolver, host addresses, audit, CA.
	Config policy.Config
	// Overrides are the addresses upstream_hosts pins, by lower-case
	// name: a resolver answers these first.
	Overrides map[string][]netip.Addr
}

// Egress builds the policy for rules whose secrets have secretValues.
func (c *Config) Egress(rules policy.Rules, secretValues map[string]string) (Egress, error) {
	pc := rules.Config(secretValues)
	pc.Limits = c.Limits.Policy()
	var err error
	if pc.DNSServers, err = c.UpstreamDNSServers(); err != nil {
		return Egress{}, err
	}
	overrides := make(map[string][]netip.Addr, len(c.UpstreamHosts))
	for name, addrs := range c.UpstreamHosts {
		key := strings.TrimSuffix(strings.ToLower(name), ".")
		for _, a := range addrs {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return Egress{}, fmt.Errorf("runtime config upstream_hosts.%q: %q is not an IP address", name, a)
			}
			overrides[key] = append(overrides[key], ip)
		}
	}
	// A new slice: rules' own list is not changed.
	pc.AllowInternal = append([]policy.HostPattern(nil), pc.AllowInternal...)
	for name := range overrides {
		pc.AllowInternal = append(pc.AllowInternal, policy.HostPattern{Host: name})
	}
	return Egress{Config: pc, Overrides: overrides}, nil
}

// PinnedResolver resolves the names the policy allows as the shim does:
// the upstream_hosts pins (Egress.Overrides) first, Next for the others.
type PinnedResolver struct {
	Pins map[string][]netip.Addr
	Next policy.Resolver
}

// LookupNetIP answers a pinned name from Pins, any other from Next.
func (r PinnedResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if addrs, ok := r.Pins[strings.TrimSuffix(strings.ToLower(host), ".")]; ok {
		return addrs, nil
	}
	return r.Next.LookupNetIP(ctx, network, host)
}

// DNSResolver asks the servers in turn (upstream_dns), each question over
// a connection dial makes; with no servers, those of /etc/resolv.conf.
// The shim dials from the container's network namespace.
func DNSResolver(servers []netip.AddrPort, dial policy.DialFunc) *net.Resolver {
	var next atomic.Uint32
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			if len(servers) > 0 {
				address = servers[int(next.Add(1)-1)%len(servers)].String()
			}
			return dial(ctx, network, address)
		},
	}
}
