package policy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/earendil-works/gondolin-containerd/oci"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// The carrier of TCP decisions: a guest SYN is decided, then refused,
// relayed raw, answered as DNS, or sniffed and handed to TLS interception
// or the HTTP server.

type tcpAction int

const (
	actRefuse tcpAction = iota
	actDNS
	actRaw
	actSniff
)

// handleTCP is called for every guest SYN.
func (n *Network) handleTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	f := &flow{
		n:   n,
		src: netip.AddrPortFrom(fromTCPIP(id.RemoteAddress), id.RemotePort),
		dst: netip.AddrPortFrom(fromTCPIP(id.LocalAddress), id.LocalPort),
	}
	if synthPrefix.Contains(f.dst.Addr()) {
		f.synthetic = true
		name, ok := n.synth.nameFor(f.dst.Addr())
		if !ok {
			r.Complete(true)
			n.audit(f.record("tcp").deny("address was not handed out by synthetic DNS"))
			return
		}
		f.name = name
	}
	act, rawHost, reason, hint := n.classifyTCP(f)
	if act == actRefuse {
		r.Complete(true)
		rec := f.record("tcp")
		n.audit(rec.deny(reason + hint))
		return
	}
	release := n.tcpFlows.acquire()
	if release == nil {
		r.Complete(true)
		n.refused(&n.tcpFlows.notice, "tcp_flows", n.tcpFlows.max, "new TCP flows", f.record("tcp"))
		return
	}
	switch act {
	case actRaw:
		// Dial first, so the guest sees the upstream's refusal as its own.
		up, addr, err := n.dialRaw(f, rawHost)
		if err != nil {
			release()
			r.Complete(true)
			rec := f.record("tcp")
			rec.Host = rawHost
			n.audit(rec.deny(err.Error()))
			return
		}
		conn, ok := n.accept(r, f, release)
		if !ok {
			up.Close()
			return
		}
		rec := f.record("tcp")
		rec.Host = rawHost
		n.audit(rec.allow("raw TCP to " + addr + " (" + reason + ")"))
		n.relay(conn, up)
		return
	}
	conn, ok := n.accept(r, f, release)
	if !ok {
		return
	}
	if act == actDNS {
		n.serveDNSTCP(conn)
		return
	}
	n.sniff(f, conn)
}

// classifyTCP decides what happens to a new flow before the handshake, so
// that what can never be allowed is refused with a RST at once.
func (n *Network) classifyTCP(f *flow) (act tcpAction, rawHost, reason, hint string) {
	ip, port := f.dst.Addr(), f.dst.Port()
	if ip == n.addrs.Load().gateway {
		if port == 53 {
			return actDNS, "", "", ""
		}
		return actRefuse, "", "the gateway serves only DNS", ""
	}
	if port == 53 {
		// DNS to any address is answered here, under the DNS policy.
		return actDNS, "", "", ""
	}
	if !f.synthetic && n.cfg.addrBlocked("", ip, port) && !n.recordedInternalAllowed(ip, port) {
		return actRefuse, "", "internal address", "; to reach it, name it in " + oci.AnnotationNetAllowInternal
	}
	if host, ok := n.tcpAllowTarget(f); ok {
		return actRaw, host, oci.AnnotationNetTCPAllow, ""
	}
	if n.cfg.Mode == oci.NetModeOpen {
		return actSniff, "", "", ""
	}
	if f.synthetic {
		if allowMatch(n.cfg.Allow, f.name, port) {
			return actSniff, "", "", ""
		}
		return actRefuse, "", "port " + strconv.Itoa(int(port)) + " of " + f.name + " is not in " + oci.AnnotationNetAllow,
			"; allow it with " + oci.AnnotationNetAllow + "=" + hostPort(f.name, port) + " (HTTP/TLS) or " + oci.AnnotationNetTCPAllow + "=" + hostPort(f.name, port) + " (raw TCP)"
	}
	for _, p := range n.cfg.Allow {
		if p.Port == port || p.Port == 0 && webPort(port) {
			return actSniff, "", "", ""
		}
	}
	return actRefuse, "", "no " + oci.AnnotationNetAllow + " entry covers port " + strconv.Itoa(int(port)), ""
}

// recordedInternalAllowed reports whether an internal address the guest
// learnt from forwarded DNS belongs to a name net.allow-internal names.
func (n *Network) recordedInternalAllowed(ip netip.Addr, port uint16) bool {
	if n.cfg.DNS == oci.DNSSynthetic {
		return false
	}
	for _, name := range n.records.names(ip) {
		if n.cfg.internalAllowed(name, ip, port) {
			return true
		}
	}
	return false
}

// tcpAllowTarget finds the net.tcp-allow entry a flow is for. With
// synthetic DNS the destination address is only trusted when it is a
// synthetic one (then its name decides) or an allowed IP literal; with
// forwarded DNS an address the guest was given for an allowed name counts.
func (n *Network) tcpAllowTarget(f *flow) (string, bool) {
	port := f.dst.Port()
	if f.synthetic {
		return f.name, matchAny(n.cfg.TCPAllow, f.name, port)
	}
	ip := f.dst.Addr()
	for _, p := range n.cfg.TCPAllow {
		if p.Port != port {
			continue
		}
		if p.IP.IsValid() && p.IP.Unmap() == ip {
			return ip.String(), true
		}
		if p.Host != "" && n.cfg.DNS != oci.DNSSynthetic && n.records.has(ip, p.Host) {
			return p.Host, true
		}
	}
	return "", false
}

// rawAddrs returns the checked addresses a raw flow to host may use.
func (n *Network) rawAddrs(ctx context.Context, f *flow, host string) ([]netip.Addr, error) {
	port := f.dst.Port()
	if f.synthetic {
		addrs, d := n.resolveChecked(ctx, host, port)
		if d != nil {
			return nil, errors.New(d.reason)
		}
		return addrs, nil
	}
	ip := f.dst.Addr()
	if n.cfg.addrBlocked(host, ip, port) {
		return nil, errors.New("internal address " + ip.String())
	}
	return []netip.Addr{ip}, nil
}

func (n *Network) dialRaw(f *flow, host string) (net.Conn, string, error) {
	ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
	defer cancel()
	addrs, err := n.rawAddrs(ctx, f, host)
	if err != nil {
		return nil, "", err
	}
	return n.dialAddrs(ctx, addrs, f.dst.Port())
}

// sniff classifies a flow by its first bytes: TLS, HTTP, or neither.
func (n *Network) sniff(f *flow, conn *gonet.TCPConn) {
	fc := &flowConn{TCPConn: conn, r: bufio.NewReaderSize(conn, 5+maxTLSRecord), f: f}
	timeout := sniffTimeout
	port := f.dst.Port()
	if n.cfg.Mode == oci.NetModeOpen && port != 80 && port != 443 {
		timeout = openSniffTimeout
	}
	conn.SetReadDeadline(time.Now().Add(timeout))
	kind, err := peekProtocol(fc.r)
	conn.SetReadDeadline(time.Time{})
	if err != nil && !isTimeout(err) {
		conn.Close()
		return
	}
	switch {
	case kind == protoTLS && (n.cfg.Mode == oci.NetModePolicy || len(n.secrets.list) > 0):
		n.serveTLS(f, fc)
	case kind == protoHTTP:
		n.httpLn.push(fc)
	case n.cfg.Mode == oci.NetModeOpen:
		// Open mode without secrets: TLS and everything else pass raw.
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
		n.audit(rec.allow("raw TCP to " + addr + " (net.mode=open)"))
		n.relay(fc, up)
	default:
		rec := f.record("tcp")
		if isTimeout(err) {
			n.audit(rec.deny("no data from the client"))
		} else {
			n.audit(rec.deny("not HTTP or TLS; raw TCP needs " + oci.AnnotationNetTCPAllow + "=" + hostPort(rec.Host, port)))
		}
		f.ep.Abort()
		conn.Close()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func hostPort(host string, port uint16) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}
