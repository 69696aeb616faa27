package policy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"
)

// dialTimeout bounds an upstream dial (and an upstream TLS handshake).
const dialTimeout = 15 * time.Second

// dialAddrs dials the first reachable of the checked addresses.
func (n *Network) dialAddrs(ctx context.Context, addrs []netip.Addr, port uint16) (net.Conn, string, error) {
	var errs []error
	for _, a := range addrs {
		addr := netip.AddrPortFrom(a, port).String()
		c, err := n.cfg.Dialer(ctx, "tcp", addr)
		if err == nil {
			return c, addr, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, "", errors.New("no address to dial")
	}
	return nil, "", errors.Join(errs...)
}
