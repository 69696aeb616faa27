package policyquery

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/earendil-works/gondolin-containerd/config"
	"github.com/earendil-works/gondolin-containerd/internal/netaddrs"
)

// HostEnv is the Env of this host for cfg: names are looked up with the
// config's upstream_dns servers (else the host's resolv.conf), as the
// shim does, but from the host's network namespace (the tool does not
// know the container's); the host's own addresses are those of its
// network namespace, as for a container run with --net-host. A container
// in a namespace of its own (Docker's bridge) has private addresses there,
// which the policy refuses as internal anyway.
func HostEnv(cfg *config.Config) (Env, error) {
	servers, err := cfg.UpstreamDNSServers()
	if err != nil {
		return Env{}, &InputError{err.Error()}
	}
	env := Env{Resolver: net.DefaultResolver, HostAddrs: hostAddrs}
	if len(servers) > 0 {
		var d net.Dialer
		env.Resolver = config.DNSResolver(servers, d.DialContext)
	}
	return env, nil
}

// hostAddrs lists every address and route gateway of this network
// namespace, as the runtime lists the shim's own.
func hostAddrs(context.Context) ([]netip.Addr, error) {
	addrs, err := netaddrs.Own()
	if err != nil {
		return nil, fmt.Errorf("the host's addresses: %w", err)
	}
	return addrs, nil
}
