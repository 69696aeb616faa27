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
	release := n.upstreams.acquire()
	if release == nil {
		n.refused(&n.upstreams.notice, "upstream_connections", n.upstreams.max, "new upstream connections", AuditRecord{Protocol: "tcp", Port: port})
		return nil, "", errUpstreamLimit
	}
	var errs []error
	for _, a := range addrs {
		addr := netip.AddrPortFrom(a, port).String()
		c, err := n.cfg.Dialer(ctx, "tcp", addr)
		if err == nil {
			return &countedConn{Conn: c, release: release}, addr, nil
		}
		errs = append(errs, err)
	}
	release()
	if len(errs) == 0 {
		return nil, "", errors.New("no address to dial")
	}
	return nil, "", errors.Join(errs...)
}

// errUpstreamLimit is a dial refused by Limits.UpstreamConnections.
var errUpstreamLimit = errors.New("policy: too many upstream connections for this container (limits.upstream_connections)")

// countedConn gives its upstream slot back when it is closed, by whichever
// path (relay, transport) closes it.
type countedConn struct {
	net.Conn
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// CloseWrite half-closes the upstream connection, so that a guest's
// shutdown(SHUT_WR) on a relayed flow reaches the upstream as its FIN while
// the upstream's answer still comes back (the relay's half-close). An
// upstream that cannot half-close is closed.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
