package policy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// The tests run the network against a second gVisor stack acting as the
// guest, joined by a real unix socketpair carrying length-prefixed frames.
// "Public" upstream addresses are documentation addresses that the test
// dialer maps to servers on 127.0.0.1; nothing leaves the machine.

// syncBuffer is a goroutine-safe bytes.Buffer.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testResolver resolves from a fixed table and counts lookups.
type testResolver struct {
	mu      sync.Mutex
	table   map[string][]netip.Addr
	lookups map[string]int
}

func (r *testResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lookups == nil {
		r.lookups = map[string]int{}
	}
	r.lookups[host]++
	a, ok := r.table[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return append([]netip.Addr(nil), a...), nil
}

func (r *testResolver) count(host string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lookups[host]
}

// testDialer maps addresses to local servers and refuses everything that
// is not on loopback. It records every attempt.
type testDialer struct {
	mu       sync.Mutex
	routes   map[string]string
	attempts []string
}

func (d *testDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.attempts = append(d.attempts, network+" "+addr)
	target, ok := d.routes[network+" "+addr]
	d.mu.Unlock()
	if !ok {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil || !ap.Addr().Unmap().IsLoopback() {
			return nil, fmt.Errorf("test dialer: no route to %s %s", network, addr)
		}
		target = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, target)
}

func (d *testDialer) attempted(sub string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.attempts {
		if strings.Contains(a, sub) {
			return true
		}
	}
	return false
}

// upstreamCA is a test CA for the upstream TLS servers (the "real" web).
type upstreamCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newUpstreamCA(t testing.TB) *upstreamCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test upstream CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &upstreamCA{cert: cert, key: key, pool: pool}
}

func (ca *upstreamCA) leaf(t testing.TB, names ...string) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip, err := netip.ParseAddr(n); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// echoed is what the upstream /echo handler reports about a request.
type echoed struct {
	Proto  string      `json:"proto"`
	Method string      `json:"method"`
	Host   string      `json:"host"`
	Path   string      `json:"path"`
	Query  string      `json:"query"`
	Header http.Header `json:"header"`
	TLS    bool        `json:"tls"`
}

// upstream is the set of local servers standing for the internet.
type upstream struct {
	tlsSrv, plainSrv *httptest.Server
	echoSrv          net.Listener
	bannerSrv        net.Listener
	udpEcho          net.PacketConn
	streamRelease    chan struct{}
}

func newUpstream(t testing.TB, ca *upstreamCA) *upstream {
	u := &upstream{streamRelease: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(echoed{Proto: r.Proto, Method: r.Method, Host: r.Host, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header, TLS: r.TLS != nil})
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-u.streamRelease:
		case <-time.After(10 * time.Second):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: second\n\n")
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://elsewhere.example.com/landing", http.StatusFound)
	})
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		buf := make([]byte, 64<<10)
		for n > 0 {
			m := min(n, len(buf))
			if _, err := w.Write(buf[:m]); err != nil {
				return
			}
			n -= m
		}
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d", n)
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want websocket", http.StatusBadRequest)
			return
		}
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: test\r\n\r\n")
		rw.Flush()
		buf := make([]byte, 1024)
		for {
			m, err := rw.Read(buf)
			if err != nil {
				return
			}
			c.Write(buf[:m])
		}
	})
	u.tlsSrv = httptest.NewUnstartedServer(mux)
	u.tlsSrv.EnableHTTP2 = true
	u.tlsSrv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf(t, "api.example.com", "*.api.example.com", "*.example.com", "example.com", apiIP.String())}}
	u.tlsSrv.StartTLS()
	t.Cleanup(u.tlsSrv.Close)
	u.plainSrv = httptest.NewServer(mux)
	t.Cleanup(u.plainSrv.Close)

	u.echoSrv = listenLoopback(t, func(c net.Conn) { io.Copy(c, c) })
	u.bannerSrv = listenLoopback(t, func(c net.Conn) {
		io.WriteString(c, "SSH-2.0-banner\r\n")
		io.Copy(io.Discard, c)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	u.udpEcho = pc
	go func() {
		buf := make([]byte, 2048)
		for {
			m, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:m], from)
		}
	}()
	return u
}

func listenLoopback(t testing.TB, serve func(net.Conn)) net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return l
}

func srvAddr(s *httptest.Server) string { return s.Listener.Addr().String() }

// plainPort is the loopback port of the plain HTTP upstream.
func (u *upstream) plainPort() string {
	_, p, _ := net.SplitHostPort(srvAddr(u.plainSrv))
	return p
}

// Addresses of the pretend internet.
var (
	apiIP    = netip.MustParseAddr("93.184.215.10")
	otherIP  = netip.MustParseAddr("93.184.215.11")
	dbIP     = netip.MustParseAddr("93.184.215.20")
	bannerIP = netip.MustParseAddr("93.184.215.21")
)

type env struct {
	t        testing.TB
	n        *Network
	g        *testGuest
	up       *upstream
	resolver *testResolver
	dialer   *testDialer
	audit    *syncBuffer
	logs     *syncBuffer
	ca       *upstreamCA
}

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	return newEnvWith(t, func(*upstream) Config { return cfg })
}

// newEnvWith builds the config once the upstream servers (and so their
// loopback ports) exist.
func newEnvWith(t testing.TB, mkcfg func(*upstream) Config) *env {
	t.Helper()
	ca := newUpstreamCA(t)
	up := newUpstream(t, ca)
	cfg := mkcfg(up)
	e := &env{t: t, up: up, ca: ca, audit: &syncBuffer{}, logs: &syncBuffer{}}
	e.resolver = &testResolver{table: map[string][]netip.Addr{
		"api.example.com":      {apiIP},
		"other.example.com":    {otherIP},
		"sub.api.example.com":  {apiIP},
		"db.example.com":       {dbIP},
		"banner.example.com":   {bannerIP},
		"internal.example.com": {netip.MustParseAddr("127.0.0.1")},
		"metadata.example.com": {netip.MustParseAddr("169.254.169.254")},
		"mapped.example.com":   {netip.MustParseAddr("::ffff:127.0.0.1")},
		"mixed.example.com":    {apiIP, netip.MustParseAddr("10.0.0.7")},
	}}
	routes := map[string]string{}
	for _, ip := range []netip.Addr{apiIP, otherIP} {
		routes["tcp "+ip.String()+":443"] = srvAddr(up.tlsSrv)
		routes["tcp "+ip.String()+":80"] = srvAddr(up.plainSrv)
	}
	routes["tcp "+dbIP.String()+":5432"] = up.echoSrv.Addr().String()
	routes["tcp "+bannerIP.String()+":2222"] = up.bannerSrv.Addr().String()
	routes["udp "+dbIP.String()+":7"] = up.udpEcho.LocalAddr().String()
	e.dialer = &testDialer{routes: routes}

	cfg.Container = "test-container"
	if cfg.CAStateDir == "" {
		cfg.CAStateDir = t.TempDir()
	}
	cfg.AuditLog = e.audit
	cfg.Logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Dialer = e.dialer.dial
	cfg.Resolver = e.resolver
	cfg.RootCAs = ca.pool
	ctx, cancel := context.WithCancel(context.Background())
	n, err := NewNetwork(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	e.n = n
	hostSide, guestSide := socketPair(t)
	if err := n.AttachStream(hostSide); err != nil {
		t.Fatal(err)
	}
	e.g = newTestGuest(t, guestSide, n.GuestConfig())
	t.Cleanup(func() {
		n.Close()
		cancel()
	})
	return e
}

func socketPair(t testing.TB) (net.Conn, net.Conn) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

// auditRecords parses the audit log so far.
func (e *env) auditRecords() []AuditRecord {
	var out []AuditRecord
	for _, line := range strings.Split(strings.TrimSpace(e.audit.String()), "\n") {
		if line == "" {
			continue
		}
		var r AuditRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			e.t.Fatalf("audit line %q is not JSON: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// findAudit returns the last record for which match is true.
func (e *env) findAudit(match func(AuditRecord) bool) (AuditRecord, bool) {
	recs := e.auditRecords()
	for i := len(recs) - 1; i >= 0; i-- {
		if match(recs[i]) {
			return recs[i], true
		}
	}
	return AuditRecord{}, false
}

// testGuest is the guest's side: a gVisor stack configured as the agent
// would configure eth0.
type testGuest struct {
	t   testing.TB
	s   *stack.Stack
	gc  GuestConfig
	ctx context.Context
}

func newTestGuest(t testing.TB, conn net.Conn, gc GuestConfig) *testGuest {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	ch, ep := newFrameLink(gc.MTU, gc.MAC)
	if err := s.CreateNIC(1, ep); err != nil {
		t.Fatal(err)
	}
	if err := s.AddProtocolAddress(1, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: toTCPIP(gc.Address.Addr()), PrefixLen: gc.Address.Bits()},
	}, stack.AddressProperties{}); err != nil {
		t.Fatal(err)
	}
	subnet, _ := tcpip.NewSubnet(toTCPIP(gc.Address.Masked().Addr()), tcpip.MaskFromBytes(net.CIDRMask(gc.Address.Bits(), 32)))
	s.SetRouteTable([]tcpip.Route{
		{Destination: subnet, NIC: 1},
		{Destination: header.IPv4EmptySubnet, Gateway: toTCPIP(gc.Gateway), NIC: 1},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		pumpFrames(ctx, conn, ch, gc.MTU)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
		s.Wait()
	})
	return &testGuest{t: t, s: s, gc: gc, ctx: ctx}
}

func (g *testGuest) dialTCP(ctx context.Context, ap netip.AddrPort) (*gonet.TCPConn, error) {
	return gonet.DialContextTCP(ctx, g.s, tcpip.FullAddress{NIC: 1, Addr: toTCPIP(ap.Addr()), Port: ap.Port()}, ipv4.ProtocolNumber)
}

// query sends one DNS query to the guest's configured resolver over UDP.
func (g *testGuest) query(name string, qtype dnsmessage.Type) (dnsmessage.Message, error) {
	conn, err := gonet.DialUDP(g.s, nil, &tcpip.FullAddress{NIC: 1, Addr: toTCPIP(g.gc.DNS[0]), Port: 53}, ipv4.ProtocolNumber)
	if err != nil {
		return dnsmessage.Message{}, err
	}
	defer conn.Close()
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: uint16(time.Now().UnixNano()), RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name + "."), Type: qtype, Class: dnsmessage.ClassINET}},
	}
	b, _ := msg.Pack()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(b); err != nil {
		return dnsmessage.Message{}, err
	}
	buf := make([]byte, 4096)
	m, err := conn.Read(buf)
	if err != nil {
		return dnsmessage.Message{}, err
	}
	var resp dnsmessage.Message
	if err := resp.Unpack(buf[:m]); err != nil {
		return resp, err
	}
	if resp.Header.ID != msg.Header.ID {
		return resp, errors.New("reply ID mismatch")
	}
	return resp, nil
}

// lookup resolves name to its first A record through the guest's DNS.
func (g *testGuest) lookup(name string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(name); err == nil {
		return ip, nil
	}
	resp, err := g.query(name, dnsmessage.TypeA)
	if err != nil {
		return netip.Addr{}, err
	}
	if resp.Header.RCode != dnsmessage.RCodeSuccess {
		return netip.Addr{}, fmt.Errorf("lookup %s: %v", name, resp.Header.RCode)
	}
	for _, a := range resp.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			return netip.AddrFrom4(r.A), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("lookup %s: no A record", name)
}

func (g *testGuest) dialHost(ctx context.Context, addr string) (net.Conn, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ip, err := g.lookup(host)
	if err != nil {
		return nil, err
	}
	port, _ := strconv.Atoi(ps)
	return g.dialTCP(ctx, netip.AddrPortFrom(ip, uint16(port)))
}

// client is an HTTP client in the guest that trusts caPEM and resolves
// through the guest's DNS. Redirects are not followed.
func (g *testGuest) client(caPEM []byte, h2 bool) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tr := &http.Transport{
		DialContext:       func(ctx context.Context, _, addr string) (net.Conn, error) { return g.dialHost(ctx, addr) },
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: h2,
	}
	if !h2 {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	g.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func allow(t testing.TB, list string) []HostPattern {
	t.Helper()
	s, err := ParseHostList(list, false)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// settings reads rules written as annotations.
func settings(t testing.TB, ann map[string]string) Rules {
	t.Helper()
	r, err := parseRules(ann)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func parseRules(ann map[string]string) (Rules, error) {
	r := DefaultRules()
	for k, v := range ann {
		if err := r.Set(k, v); err != nil {
			return r, err
		}
	}
	return r, nil
}

func (g *testGuest) dialUDP(ap netip.AddrPort) (*gonet.UDPConn, error) {
	return gonet.DialUDP(g.s, nil, &tcpip.FullAddress{NIC: 1, Addr: toTCPIP(ap.Addr()), Port: ap.Port()}, ipv4.ProtocolNumber)
}

// fakeDNS is an upstream resolver on 127.0.0.1 that counts questions.
type fakeDNS struct {
	addr   netip.AddrPort
	mu     sync.Mutex
	counts map[string]int
}

func newFakeDNS(t testing.TB, table map[string]netip.Addr) *fakeDNS {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	d := &fakeDNS{addr: netip.MustParseAddrPort(pc.LocalAddr().String()), counts: map[string]int{}}
	go func() {
		buf := make([]byte, 4096)
		for {
			m, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var q dnsmessage.Message
			if q.Unpack(buf[:m]) != nil || len(q.Questions) != 1 {
				continue
			}
			name := q.Questions[0].Name.String()
			d.mu.Lock()
			d.counts[name]++
			d.mu.Unlock()
			resp := dnsmessage.Message{Header: dnsmessage.Header{ID: q.ID, Response: true, RecursionAvailable: true}, Questions: q.Questions}
			if a, ok := table[name]; ok {
				if q.Questions[0].Type == dnsmessage.TypeA {
					resp.Answers = append(resp.Answers, dnsmessage.Resource{
						Header: dnsmessage.ResourceHeader{Name: q.Questions[0].Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
						Body:   &dnsmessage.AResource{A: a.As4()},
					})
				}
			} else {
				resp.RCode = dnsmessage.RCodeNameError
			}
			b, _ := resp.Pack()
			pc.WriteTo(b, from)
		}
	}()
	return d
}

func (d *fakeDNS) count(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.counts[name]
}
