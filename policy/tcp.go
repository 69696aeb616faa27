package policy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/earendil-works/gondolin-containerd/oci"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const (
	// sniffTimeout bounds the wait for a client's first bytes.
	sniffTimeout = 30 * time.Second
	// openSniffTimeout is the wait in mode open on ports other than 80 and
	// 443, after which a silent client (a server-speaks-first protocol)
	// is passed through raw.
	openSniffTimeout = 2 * time.Second
	// tlsHandshakeTimeout bounds the guest-side MITM handshake.
	tlsHandshakeTimeout = 30 * time.Second
	dialTimeout         = 15 * time.Second
	maxTLSRecord        = 16384 + 2048
)

// flow is one guest TCP connection.
type flow struct {
	n   *Network
	ep  tcpip.Endpoint
	src netip.AddrPort
	dst netip.AddrPort
	// name is the host a synthetic destination address stands for.
	name      string
	synthetic bool
	tls       bool
	sni       string

	mu    sync.Mutex
	proxy *httputil.ReverseProxy
	// upstream holds one transport per checked destination (proxy.go).
	upstream upstreamSet
}

func (f *flow) record(proto string) AuditRecord {
	host := f.name
	if host == "" {
		host = f.dst.Addr().String()
	}
	return AuditRecord{Protocol: proto, Host: host, Port: f.dst.Port(), Dest: f.dst.String()}
}

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

// accept completes the guest's handshake. The flow holds its slot of
// Limits.TCPFlows (release) until its guest side is closed.
func (n *Network) accept(r *tcp.ForwarderRequest, f *flow, release func()) (*gonet.TCPConn, bool) {
	var wq waiter.Queue
	raw, err := r.CreateEndpoint(&wq)
	if err != nil {
		release()
		r.Complete(true)
		return nil, false
	}
	ep := &countedEndpoint{Endpoint: raw, release: release}
	r.Complete(false)
	ep.SocketOptions().SetKeepAlive(true)
	f.ep = ep
	return gonet.NewTCPConn(&wq, ep), true
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

// flowConn is the guest side of a flow, with the bytes peeked at by the
// classifier still to be read.
type flowConn struct {
	*gonet.TCPConn
	r *bufio.Reader
	f *flow
}

func (c *flowConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func flowOf(c net.Conn) *flow {
	switch c := c.(type) {
	case *flowConn:
		return c.f
	case *tls.Conn:
		if fc, ok := c.NetConn().(*flowConn); ok {
			return fc.f
		}
	}
	return nil
}

type flowKey struct{}

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

type protoKind int

const (
	protoUnknown protoKind = iota
	protoTLS
	protoHTTP
)

// peekProtocol looks at a client's first bytes without consuming them. For
// TLS it waits for the whole first record (the ClientHello).
func peekProtocol(r *bufio.Reader) (protoKind, error) {
	b, err := r.Peek(1)
	if err != nil {
		return protoUnknown, err
	}
	if b[0] == 0x16 {
		h, err := r.Peek(5)
		if err != nil {
			return protoUnknown, err
		}
		if h[1] != 3 || h[2] > 4 {
			return protoUnknown, nil
		}
		l := int(h[3])<<8 | int(h[4])
		if l == 0 || l > maxTLSRecord {
			return protoUnknown, nil
		}
		if _, err := r.Peek(5 + l); err != nil {
			return protoUnknown, err
		}
		return protoTLS, nil
	}
	for want := r.Buffered(); ; want = r.Buffered() + 1 {
		b, err := r.Peek(want)
		if err != nil {
			return protoUnknown, err
		}
		switch classifyHTTP(b) {
		case httpYes:
			return protoHTTP, nil
		case httpNo:
			return protoUnknown, nil
		}
	}
}

type httpGuess int

const (
	httpMore httpGuess = iota
	httpYes
	httpNo
)

const maxMethodLen = 20

// classifyHTTP tells whether b starts like an HTTP/1.x request line (or the
// HTTP/2 prior-knowledge preface): an upper-case method token and a space.
func classifyHTTP(b []byte) httpGuess {
	for i, c := range b {
		switch {
		case c == ' ':
			if i >= 3 {
				return httpYes
			}
			return httpNo
		case c >= 'A' && c <= 'Z', c == '-' && i > 0:
		default:
			return httpNo
		}
		if i >= maxMethodLen {
			return httpNo
		}
	}
	if len(b) > maxMethodLen {
		return httpNo
	}
	return httpMore
}

// peekSNI reads the server name from the buffered ClientHello.
func peekSNI(r *bufio.Reader) string {
	b, err := r.Peek(r.Buffered())
	if err != nil {
		return ""
	}
	return parseSNI(b)
}

var errSNIDone = errors.New("sni read")

// parseSNI lets crypto/tls parse a ClientHello and reports its SNI.
func parseSNI(hello []byte) string {
	var sni string
	c := tls.Server(&replayConn{r: bytes.NewReader(hello)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni = h.ServerName
			return nil, errSNIDone
		},
	})
	c.Handshake()
	return sni
}

// replayConn is a read-only net.Conn over a byte slice.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *replayConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// serveTLS terminates the guest's TLS with a leaf from the host CA and
// hands the decrypted stream to the HTTP server.
func (n *Network) serveTLS(f *flow, fc *flowConn) {
	f.tls = true
	tc := tls.Server(fc, n.tlsConfig)
	ctx, cancel := context.WithTimeout(n.ctx, tlsHandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		rec := f.record("tls")
		if f.sni != "" {
			rec.Host = f.sni
		}
		n.audit(rec.deny("TLS handshake with the guest failed (does it trust the gondolin CA?): " + err.Error()))
		tc.Close()
		return
	}
	n.httpLn.push(tc)
}

func (n *Network) getCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	var f *flow
	if fc, ok := h.Conn.(*flowConn); ok {
		f = fc.f
	}
	name, ok := normalizeHost(h.ServerName)
	if ok && f != nil {
		f.sni = name
	}
	if !ok {
		switch {
		case f != nil && f.name != "":
			name = f.name
		case f != nil:
			name = f.dst.Addr().String()
		default:
			return nil, errors.New("no server name")
		}
	}
	return n.ca.leaf(name)
}

// relay copies both ways until both directions are done or the network
// closes.
func (n *Network) relay(guest, up net.Conn) {
	done := make(chan struct{})
	stop := context.AfterFunc(n.ctx, func() {
		guest.Close()
		up.Close()
	})
	defer stop()
	go func() {
		copyHalf(up, guest)
		close(done)
	}()
	copyHalf(guest, up)
	<-done
	guest.Close()
	up.Close()
}

type closeWriter interface{ CloseWrite() error }

func copyHalf(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if cw, ok := dst.(closeWriter); ok && err == nil {
		cw.CloseWrite()
	} else {
		dst.Close()
		src.Close()
	}
}

func hostPort(host string, port uint16) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// connListener hands classified guest connections to the HTTP server.
type connListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4zero}
}
