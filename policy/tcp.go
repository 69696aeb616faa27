package policy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// The carrier of TCP decisions: a guest SYN is decided, then refused,
// relayed raw, answered as DNS, or sniffed and handed to TLS interception
// or the HTTP server.

// handleTCP is called for every guest SYN: it carries out DecideConnect.
func (n *Network) handleTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	dst := netip.AddrPortFrom(fromTCPIP(id.LocalAddress), id.LocalPort)
	d := n.policy.DecideConnect(n.facts, dst, n.addrs.Load().gateway)
	f := &flow{
		n:         n,
		src:       netip.AddrPortFrom(fromTCPIP(id.RemoteAddress), id.RemotePort),
		dst:       dst,
		name:      d.Flow.Name,
		synthetic: d.Flow.Synthetic,
	}
	if d.Action == TCPRefuse {
		r.Complete(true)
		n.audit(f.record("tcp").deny(d.auditReason()))
		return
	}
	release := n.tcpFlows.acquire()
	if release == nil {
		r.Complete(true)
		n.refused(&n.tcpFlows.notice, "tcp_flows", n.tcpFlows.max, "new TCP flows", f.record("tcp"))
		return
	}
	switch d.Action {
	case TCPRaw:
		// Dial first, so the guest sees the upstream's refusal as its own.
		up, addr, err := n.dialRaw(f, d.Host)
		if err != nil {
			release()
			r.Complete(true)
			rec := f.record("tcp")
			rec.Host = d.Host
			n.audit(rec.deny(err.Error()))
			return
		}
		conn, ok := n.accept(r, f, release)
		if !ok {
			up.Close()
			return
		}
		rec := f.record("tcp")
		rec.Host = d.Host
		n.audit(rec.allow("raw TCP to " + addr + " (" + d.Reason + ")"))
		n.relay(conn, up)
		return
	}
	conn, ok := n.accept(r, f, release)
	if !ok {
		return
	}
	if d.Action == TCPDNS {
		n.serveDNSTCP(conn)
		return
	}
	n.sniff(f, conn)
}

// dialRaw dials a flow passed through raw at the addresses ConnectAddrs
// checked for host.
func (n *Network) dialRaw(f *flow, host string) (net.Conn, string, error) {
	ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
	defer cancel()
	addrs, err := n.policy.ConnectAddrs(ctx, n.facts, f.desc(), host)
	if err != nil {
		return nil, "", err
	}
	return n.dialAddrs(ctx, addrs, f.dst.Port())
}

// sniff reads a flow's first bytes and carries out decideSniffed: TLS
// interception, the HTTP server, a raw relay, or a refusal.
func (n *Network) sniff(f *flow, conn *gonet.TCPConn) {
	fc := &flowConn{TCPConn: conn, r: bufio.NewReaderSize(conn, 5+maxTLSRecord), f: f}
	conn.SetReadDeadline(time.Now().Add(n.policy.sniffTimeout(f.dst.Port())))
	kind, err := peekProtocol(fc.r)
	conn.SetReadDeadline(time.Time{})
	if err != nil && !isTimeout(err) {
		conn.Close()
		return
	}
	act, v := n.policy.decideSniffed(f.desc(), kind, isTimeout(err))
	switch act {
	case sniffTLS:
		n.serveTLS(f, fc)
	case sniffHTTP:
		n.httpLn.push(fc)
	case sniffRaw:
		rec := f.record("tcp")
		if kind == protoTLS {
			rec.Protocol = "tls"
			if sni := peekSNI(fc.r); sni != "" {
				rec.Host = sni
			}
		}
		host := f.name
		if host == "" {
			host = f.dst.Addr().String()
		}
		up, addr, err := n.dialRaw(f, host)
		if err != nil {
			n.audit(rec.deny(err.Error()))
			f.ep.Abort()
			conn.Close()
			return
		}
		n.audit(rec.allow("raw TCP to " + addr + " (" + v.Reason + ")"))
		n.relay(fc, up)
	default:
		n.audit(f.record("tcp").deny(v.auditReason()))
		f.ep.Abort()
		conn.Close()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
