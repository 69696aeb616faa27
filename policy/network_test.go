package policy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func TestModeNoneHasNoNIC(t *testing.T) {
	n, err := NewNetwork(context.Background(), Config{Mode: NetModeNone, CAStateDir: t.TempDir()})
	if !errors.Is(err, ErrNoNetwork) || n != nil {
		t.Fatalf("NewNetwork(mode none) = %v, %v; want nil, ErrNoNetwork", n, err)
	}
}

func TestGuestConfig(t *testing.T) {
	e := newEnv(t, Config{})
	gc := e.n.GuestConfig()
	if gc.Address.String() != "192.168.127.3/24" || gc.Gateway.String() != "192.168.127.1" ||
		len(gc.DNS) != 1 || gc.DNS[0] != gc.Gateway || gc.MTU != 65000 || gc.MAC.String() != "02:00:00:00:00:01" {
		t.Fatalf("GuestConfig = %+v", gc)
	}
}

func TestDNSSynthetic(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com,*.svc.example.com:8443"), TCPAllow: allow(t, "db.example.com:5432")})
	a1, err := e.g.lookup("api.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if !synthPrefix.Contains(a1) {
		t.Fatalf("api.example.com -> %s, want an address in %s", a1, synthPrefix)
	}
	again, _ := e.g.lookup("API.example.com")
	if again != a1 {
		t.Fatalf("synthetic address not stable: %s then %s", a1, again)
	}
	a2, err := e.g.lookup("x.svc.example.com")
	if err != nil || a2 == a1 || !synthPrefix.Contains(a2) {
		t.Fatalf("x.svc.example.com -> %s, %v", a2, err)
	}
	if _, err := e.g.lookup("db.example.com"); err != nil {
		t.Fatalf("tcp-allow name not answered: %v", err)
	}
	for _, name := range []string{"other.example.com", "svc.example.com", "example.com", "evil.com"} {
		resp, err := e.g.query(name, dnsmessage.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.RCode != dnsmessage.RCodeNameError {
			t.Errorf("%s: rcode %v, want NXDOMAIN", name, resp.Header.RCode)
		}
	}
	// AAAA for an allowed name: no data (the guest has no IPv6).
	resp, err := e.g.query("api.example.com", dnsmessage.TypeAAAA)
	if err != nil || resp.Header.RCode != dnsmessage.RCodeSuccess || len(resp.Answers) != 0 {
		t.Fatalf("AAAA: %v %+v", err, resp)
	}
	// No host-side lookup ever happened.
	for _, name := range []string{"api.example.com", "other.example.com", "evil.com"} {
		if c := e.resolver.count(name); c != 0 {
			t.Errorf("synthetic DNS made %d host lookups for %s", c, name)
		}
	}
	if r, ok := e.findAudit(func(r AuditRecord) bool { return r.Protocol == "dns" && r.Host == "evil.com" }); !ok || r.Decision != Denied {
		t.Errorf("no denied DNS audit for evil.com: %+v", r)
	}
}

func TestHTTPAllowedAndDenied(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com")})
	c := e.g.client(e.n.CACertPEM(), false)

	resp, err := c.Get("http://api.example.com/echo?q=1")
	if err != nil {
		t.Fatal(err)
	}
	var got echoed
	if err := json.Unmarshal([]byte(readBody(t, resp)), &got); err != nil || got.Host != "api.example.com" || got.Query != "q=1" || got.TLS {
		t.Fatalf("echo = %+v, %v", got, err)
	}
	if got.Header.Get("X-Forwarded-For") != "" {
		t.Errorf("X-Forwarded-For leaked: %q", got.Header.Get("X-Forwarded-For"))
	}

	// Same connection target (an allowed synthetic address), other Host.
	req, _ := http.NewRequest("GET", "http://api.example.com/secret-path?token=x", nil)
	req.Host = "other.example.com"
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "other.example.com") || !strings.Contains(body, KeyAllow) {
		t.Fatalf("denied request: %d %q", resp.StatusCode, body)
	}
	r, ok := e.findAudit(func(r AuditRecord) bool { return r.Host == "other.example.com" && r.Protocol == "http" })
	if !ok || r.Decision != Denied || r.Method != "GET" || r.Path != "/secret-path" || r.Port != 80 || r.Container != "test-container" {
		t.Fatalf("audit for denied request: %+v", r)
	}
	if strings.Contains(e.audit.String(), "token=x") {
		t.Error("audit contains the query string")
	}
	r, ok = e.findAudit(func(r AuditRecord) bool { return r.Host == "api.example.com" && r.Protocol == "http" })
	if !ok || r.Decision != Allowed || r.Path != "/echo" {
		t.Fatalf("audit for allowed request: %+v", r)
	}

	// A hard-coded destination address is not trusted: the Host decides.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := e.g.dialTCP(ctx, netip.AddrPortFrom(otherIP, 80))
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "GET /echo HTTP/1.1\r\nHost: other.example.com\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("Host other.example.com via its real IP: %d", resp.StatusCode)
	}
	// Keep-alive: the next request on the same connection.
	io.WriteString(conn, "GET /echo HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(readBody(t, resp)), &got); err != nil || got.Host != "api.example.com" {
		t.Fatalf("second request on the connection: %d %+v %v", resp.StatusCode, got, err)
	}
	conn.Close()
	// The upstream connection went to api.example.com's checked address.
	if !e.dialer.attempted("tcp 93.184.215.10:80") || e.dialer.attempted("93.184.215.11") {
		t.Fatalf("dial attempts: %v", e.dialer.attempts)
	}

	// CONNECT is refused.
	conn, err = e.g.dialTCP(ctx, netip.AddrPortFrom(otherIP, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
}

func TestHTTPSThroughMITM(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com,*.api.example.com")})
	c := e.g.client(e.n.CACertPEM(), false)
	resp, err := c.Get("https://api.example.com/echo")
	if err != nil {
		t.Fatal(err)
	}
	var got echoed
	if err := json.Unmarshal([]byte(readBody(t, resp)), &got); err != nil || !got.TLS || got.Host != "api.example.com" {
		t.Fatalf("echo = %+v, %v", got, err)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || resp.TLS.PeerCertificates[0].Issuer.CommonName != "gondolin egress CA" {
		t.Fatalf("guest did not see a gondolin leaf: %+v", resp.TLS)
	}
	resp, err = c.Get("https://sub.api.example.com/echo")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != 200 || resp.TLS.PeerCertificates[0].DNSNames[0] != "sub.api.example.com" {
		t.Fatalf("sub.api.example.com: %d %v", resp.StatusCode, resp.TLS.PeerCertificates[0].DNSNames)
	}

	// A guest that does not trust the CA fails the handshake, audited.
	untrusting := e.g.client(nil, false)
	if _, err := untrusting.Get("https://api.example.com/echo"); err == nil {
		t.Fatal("handshake succeeded without trusting the gondolin CA")
	}
	waitFor(t, func() bool {
		_, ok := e.findAudit(func(r AuditRecord) bool { return r.Protocol == "tls" && r.Decision == Denied })
		return ok
	})

	// An upstream whose certificate does not verify is a 502, not a pass.
	e.n.cfg.RootCAs = x509.NewCertPool()
	c2 := e.g.client(e.n.CACertPEM(), false)
	resp, err = c2.Get("https://api.example.com/echo")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "certificate") {
		t.Fatalf("unverified upstream: %d %q", resp.StatusCode, body)
	}
}

func TestHTTP2(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com")})
	c := e.g.client(e.n.CACertPEM(), true)
	for i := 0; i < 3; i++ {
		resp, err := c.Get("https://api.example.com/echo")
		if err != nil {
			t.Fatal(err)
		}
		var got echoed
		if err := json.Unmarshal([]byte(readBody(t, resp)), &got); err != nil {
			t.Fatal(err)
		}
		if resp.Proto != "HTTP/2.0" || got.Proto != "HTTP/2.0" {
			t.Fatalf("guest proto %s, upstream proto %s; want HTTP/2.0 both", resp.Proto, got.Proto)
		}
	}
	req, _ := http.NewRequest("GET", "https://api.example.com/echo", nil)
	req.Host = "other.example.com"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("h2 request for another host: %d", resp.StatusCode)
	}
}

func TestStreamingResponse(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com")})
	for _, h2 := range []bool{false, true} {
		c := e.g.client(e.n.CACertPEM(), h2)
		resp, err := c.Get("https://api.example.com/stream")
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		line, err := br.ReadString('\n')
		if err != nil || line != "data: first\n" {
			t.Fatalf("first event: %q %v", line, err)
		}
		// The second event is only produced after the first arrived.
		e.up.streamRelease <- struct{}{}
		rest, err := io.ReadAll(br)
		resp.Body.Close()
		if err != nil || !strings.Contains(string(rest), "data: second") {
			t.Fatalf("rest: %q %v", rest, err)
		}
	}
}

func TestRequestBodyStreams(t *testing.T) {
	for _, mtu := range []int{1500, 0} {
		e := newEnv(t, Config{Allow: allow(t, "api.example.com"), MTU: mtu})
		c := e.g.client(e.n.CACertPEM(), true)
		const size = 4 << 20
		resp, err := c.Post("https://api.example.com/upload", "application/octet-stream", io.LimitReader(zeroReader{}, size))
		if err != nil {
			t.Fatal(err)
		}
		if body := readBody(t, resp); body != "4194304" {
			t.Fatalf("MTU %d: upload: %d %q", mtu, resp.StatusCode, body)
		}
		resp, err = c.Get("https://api.example.com/bytes?n=3000000")
		if err != nil {
			t.Fatal(err)
		}
		if body := readBody(t, resp); len(body) != 3000000 {
			t.Fatalf("MTU %d: download: %d bytes", mtu, len(body))
		}
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestRedirectPassedBack(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com")})
	c := e.g.client(e.n.CACertPEM(), false)
	resp, err := c.Get("https://api.example.com/redirect")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://elsewhere.example.com/landing" {
		t.Fatalf("redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if e.resolver.count("elsewhere.example.com") != 0 {
		t.Fatal("the shim followed the redirect")
	}
}

func TestWebSocket(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com")})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	raw, err := e.g.dialHost(ctx, "api.example.com:443")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.n.CACertPEM())
	conn := tls.Client(raw, &tls.Config{ServerName: "api.example.com", RootCAs: pool, NextProtos: []string{"http/1.1"}})
	defer conn.Close()
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: api.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "+key+"\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %d", resp.StatusCode)
	}
	for _, msg := range []string{"hello", "world"} {
		io.WriteString(conn, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q: %q %v", msg, buf, err)
		}
	}
}

func TestInternalRefused(t *testing.T) {
	e := newEnvWith(t, func(u *upstream) Config {
		p := u.plainPort()
		hosts := "api.example.com,internal.example.com:" + p + ",metadata.example.com,mapped.example.com:" + p + ",mixed.example.com,127.0.0.1:" + p + ",169.254.169.254,[::ffff:127.0.0.1]:" + p
		return Config{Allow: allow(t, hosts)}
	})
	c := e.g.client(e.n.CACertPEM(), false)
	p := e.up.plainPort()
	for _, u := range []struct{ url, addr string }{
		{"http://internal.example.com:" + p + "/echo", "127.0.0.1"},
		{"http://metadata.example.com/latest/meta-data/", "169.254.169.254"},
		{"http://mapped.example.com:" + p + "/echo", "127.0.0.1"},
		{"http://mixed.example.com/echo", "10.0.0.7"},
	} {
		resp, err := c.Get(u.url)
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, u.addr) || !strings.Contains(body, KeyAllowInternal) {
			t.Fatalf("%s: %d %q", u.url, resp.StatusCode, body)
		}
	}
	// IP literals in the Host, on a flow to a public address.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, host := range []string{"127.0.0.1:" + p, "169.254.169.254", "[::ffff:127.0.0.1]:" + p, "[::ffff:a9fe:a9fe]"} {
		conn, err := e.g.dialTCP(ctx, netip.AddrPortFrom(apiIP, 80))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		conn.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("Host %s: %d", host, resp.StatusCode)
		}
	}
	// Direct TCP to internal addresses is reset before the handshake.
	for _, ap := range []string{"169.254.169.254:80", "10.0.0.1:443", "100.64.1.1:80", "192.168.127.9:80"} {
		if conn, err := e.g.dialTCP(ctx, netip.MustParseAddrPort(ap)); err == nil {
			conn.Close()
			t.Fatalf("TCP to %s was accepted", ap)
		}
	}
	for _, a := range []string{"169.254.169.254", "10.0.0.7", "10.0.0.1", "100.64.1.1"} {
		if e.dialer.attempted(a) {
			t.Fatalf("an upstream dial to %s was attempted", a)
		}
	}
	if e.dialer.attempted("127.0.0.1") {
		t.Fatal("an upstream dial to 127.0.0.1 was attempted")
	}
}

func TestAllowInternal(t *testing.T) {
	e := newEnvWith(t, func(u *upstream) Config {
		s := settings(t, map[string]string{
			KeyAllow:         "internal.example.com:" + u.plainPort() + ",mapped.example.com:" + u.plainPort(),
			KeyAllowInternal: "127.0.0.0/8",
		})
		return s.Config(nil)
	})
	c := e.g.client(e.n.CACertPEM(), false)
	p := e.up.plainPort()
	for _, name := range []string{"internal.example.com", "mapped.example.com"} {
		resp, err := c.Get("http://" + name + ":" + p + "/echo")
		if err != nil {
			t.Fatal(err)
		}
		var got echoed
		if err := json.Unmarshal([]byte(readBody(t, resp)), &got); err != nil || got.Host != name+":"+p {
			t.Fatalf("%s with allow-internal: %d %+v %v", name, resp.StatusCode, got, err)
		}
	}
}

func assertNoSecrets(t *testing.T, e *env, values ...string) {
	t.Helper()
	for _, out := range []struct{ name, text string }{{"audit", e.audit.String()}, {"log", e.logs.String()}} {
		for _, v := range values {
			if strings.Contains(out.text, v) {
				t.Errorf("%s output contains a secret or placeholder", out.name)
			}
		}
	}
}

func TestRawTCPPassthrough(t *testing.T) {
	s := settings(t, map[string]string{
		KeyAllow:    "api.example.com:443",
		KeyTCPAllow: "db.example.com:5432,banner.example.com:2222",
	})
	e := newEnv(t, s.Config(nil))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	conn, err := e.g.dialHost(ctx, "db.example.com:5432")
	if err != nil {
		t.Fatal(err)
	}
	msg := "\x00\x00\x00\x08\x04\xd2\x16\x2f" // a Postgres SSLRequest: not HTTP
	io.WriteString(conn, msg)
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: %q %v", buf, err)
	}
	conn.Close()

	// A server-speaks-first protocol works: nothing waits for the client.
	conn, err = e.g.dialHost(ctx, "banner.example.com:2222")
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "SSH-2.0-banner\r\n" {
		t.Fatalf("banner: %q %v", line, err)
	}
	conn.Close()

	// Other ports of a tcp-allow host, and raw bytes elsewhere: refused.
	if c, err := e.g.dialHost(ctx, "db.example.com:5433"); err == nil {
		c.Close()
		t.Fatal("db.example.com:5433 accepted")
	}
	if c, err := e.g.dialTCP(ctx, netip.AddrPortFrom(dbIP, 5432)); err == nil {
		c.Close()
		t.Fatal("a raw IP not named by tcp-allow was accepted (synthetic DNS)")
	}
	conn, err = e.g.dialHost(ctx, "api.example.com:443")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, msg)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(buf); err == nil {
		t.Fatal("non-HTTP bytes to an HTTP-only host got an answer")
	}
	conn.Close()
	r, ok := e.findAudit(func(r AuditRecord) bool {
		return r.Protocol == "tcp" && r.Host == "db.example.com" && r.Decision == Allowed
	})
	if !ok || r.Port != 5432 {
		t.Fatalf("raw TCP audit: %+v", r)
	}
}

func TestModeOpen(t *testing.T) {
	e := newEnv(t, Config{Mode: NetModeOpen})
	c := e.g.client(e.n.CACertPEM(), false)
	// Without secrets, TLS is passed through: the guest sees the real
	// server's certificate.
	c.Transport.(*http.Transport).TLSClientConfig.RootCAs.AddCert(e.ca.cert)
	for _, u := range []string{"https://other.example.com/echo", "http://api.example.com/echo"} {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("%s in mode open: %d", u, resp.StatusCode)
		}
		if resp.TLS != nil && resp.TLS.PeerCertificates[0].Issuer.CommonName != "test upstream CA" {
			t.Fatalf("TLS in mode open without secrets was intercepted")
		}
	}
	r, ok := e.findAudit(func(r AuditRecord) bool { return r.Protocol == "tls" })
	if !ok || r.Host != "other.example.com" || r.Decision != Allowed {
		t.Fatalf("raw TLS audit: %+v", r)
	}
	resp, err := c.Get("http://metadata.example.com/")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("metadata in mode open: %d", resp.StatusCode)
	}
	// Raw TCP to a public address passes; to an internal one it does not.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := e.g.dialTCP(ctx, netip.AddrPortFrom(dbIP, 5432))
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, "\x00hello")
	buf := make([]byte, 6)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "\x00hello" {
		t.Fatalf("raw echo in mode open: %q %v", buf, err)
	}
	conn.Close()
	conn, err = e.g.dialTCP(ctx, netip.AddrPortFrom(bannerIP, 2222))
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || line != "SSH-2.0-banner\r\n" {
		t.Fatalf("server-first protocol in mode open: %q %v", line, err)
	}
	conn.Close()
	for _, ap := range []string{"169.254.169.254:80", "10.1.2.3:22", "192.168.0.1:22"} {
		if c, err := e.g.dialTCP(ctx, netip.MustParseAddrPort(ap)); err == nil {
			c.Close()
			t.Fatalf("mode open accepted %s", ap)
		}
	}
	// UDP to a public address is relayed.
	uc, err := e.g.dialUDP(netip.AddrPortFrom(dbIP, 7))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(5 * time.Second))
	uc.Write([]byte("datagram"))
	ub := make([]byte, 64)
	if m, err := uc.Read(ub); err != nil || string(ub[:m]) != "datagram" {
		t.Fatalf("UDP relay in mode open: %q %v", ub[:m], err)
	}
}

func TestDNSTrusted(t *testing.T) {
	dns := newFakeDNS(t, map[string]netip.Addr{"api.example.com.": apiIP, "other.example.com.": otherIP})
	e := newEnv(t, Config{DNS: DNSTrusted, Allow: allow(t, "api.example.com"), DNSServers: []netip.AddrPort{dns.addr}})
	a, err := e.g.lookup("api.example.com")
	if err != nil || a != apiIP {
		t.Fatalf("trusted lookup: %s %v", a, err)
	}
	resp, err := e.g.query("other.example.com", dnsmessage.TypeA)
	if err != nil || resp.Header.RCode != dnsmessage.RCodeNameError {
		t.Fatalf("disallowed name: %v %v", resp.Header.RCode, err)
	}
	if dns.count("other.example.com.") != 0 {
		t.Fatal("a disallowed name reached the upstream resolver")
	}
	c := e.g.client(e.n.CACertPEM(), false)
	r, err := c.Get("https://api.example.com/echo")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, r)
	if r.StatusCode != 200 {
		t.Fatalf("trusted mode request: %d", r.StatusCode)
	}
	// The Host must belong to the address the guest connected to.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := e.g.dialTCP(ctx, netip.AddrPortFrom(otherIP, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /echo HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	r, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, r)
	if r.StatusCode != http.StatusForbidden || !strings.Contains(body, "not an address of api.example.com") {
		t.Fatalf("Host/destination mismatch: %d %q", r.StatusCode, body)
	}
}

func TestDNSOverTCP(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com")})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := e.g.dialTCP(ctx, netip.AddrPortFrom(defaultGateway, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg := dnsmessage.Message{Header: dnsmessage.Header{ID: 7}, Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("api.example.com."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	b, _ := msg.Pack()
	if err := writeDNSTCP(conn, b); err != nil {
		t.Fatal(err)
	}
	reply, err := readDNSTCP(conn)
	if err != nil {
		t.Fatal(err)
	}
	var resp dnsmessage.Message
	if err := resp.Unpack(reply); err != nil || resp.ID != 7 || len(resp.Answers) != 1 {
		t.Fatalf("DNS over TCP: %+v %v", resp, err)
	}
}

func TestUDPRefusedInPolicyMode(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com")})
	conn, err := e.g.dialUDP(netip.AddrPortFrom(otherIP, 123))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("ntp?"))
	waitFor(t, func() bool {
		_, ok := e.findAudit(func(r AuditRecord) bool { return r.Protocol == "udp" && r.Decision == Denied && r.Port == 123 })
		return ok
	})
}

func TestCAStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	e1 := newEnv(t, Config{CAStateDir: dir})
	st, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v %v", st, err)
	}
	e2 := newEnv(t, Config{CAStateDir: dir})
	if string(e1.n.CACertPEM()) != string(e2.n.CACertPEM()) {
		t.Fatal("CA not reused")
	}
	cert, err := x509.ParseCertificate(e1.n.ca.cert.Raw)
	if err != nil || !cert.IsCA || cert.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatalf("CA cert: %v", err)
	}
	l1, err := e1.n.ca.leaf("api.example.com")
	if err != nil {
		t.Fatal(err)
	}
	l2, _ := e1.n.ca.leaf("api.example.com")
	if l1 != l2 {
		t.Fatal("leaf not cached")
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	if _, err := l1.Leaf.Verify(x509.VerifyOptions{DNSName: "api.example.com", Roots: pool}); err != nil {
		t.Fatal(err)
	}
}

func TestNoSecretsInOutput(t *testing.T) {
	const real = "another-real-secret-value"
	s := settings(t, map[string]string{
		KeyAllow:                "api.example.com,other.example.com",
		KeySecretPrefix + "KEY": "api.example.com",
	})
	e := newEnv(t, s.Config(map[string]string{"KEY": real}))
	ph, _ := e.n.Placeholder("KEY")
	c := e.g.client(e.n.CACertPEM(), false)
	for _, u := range []string{
		"https://api.example.com/" + ph + "/echo?k=" + ph,
		"https://other.example.com/" + real + "/x",
		"https://other.example.com/" + ph,
		"http://evil.example.com/" + ph,
	} {
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Authorization", "Bearer "+ph)
		if resp, err := c.Do(req); err == nil {
			readBody(t, resp)
		}
	}
	if !strings.Contains(e.audit.String(), "[placeholder KEY]") && !strings.Contains(e.audit.String(), "[secret KEY]") {
		t.Error("audit shows no redaction marker")
	}
	assertNoSecrets(t, e, real, ph)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIPLiteralAllowAndH2C(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com,93.184.215.10")})
	c := e.g.client(e.n.CACertPEM(), true)
	resp, err := c.Get("https://93.184.215.10/echo")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != 200 || len(resp.TLS.PeerCertificates[0].IPAddresses) != 1 {
		t.Fatalf("IP literal over TLS: %d", resp.StatusCode)
	}
	if _, err := c.Get("https://93.184.215.11/echo"); err != nil {
		t.Fatal(err)
	}
	if r, ok := e.findAudit(func(r AuditRecord) bool { return r.Host == "93.184.215.11" }); !ok || r.Decision != Denied {
		t.Fatalf("IP literal not in net.allow: %+v", r)
	}

	// HTTP/2 with prior knowledge over plain TCP is checked per request too.
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{
		Protocols:   &protos,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return e.g.dialHost(ctx, addr) },
	}, Timeout: 10 * time.Second}
	resp, err = h2c.Get("http://api.example.com/echo")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.Proto != "HTTP/2.0" || resp.StatusCode != 200 {
		t.Fatalf("h2c: %s %d", resp.Proto, resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", "http://api.example.com/echo", nil)
	req.Host = "other.example.com"
	resp, err = h2c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("h2c request for another host: %d", resp.StatusCode)
	}

	// An Upgrade other than WebSocket (h2c) is dropped, not tunnelled.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := e.g.dialHost(ctx, "api.example.com:80")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /echo HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	var got echoed
	if err := json.Unmarshal([]byte(readBody(t, resp)), &got); err != nil || resp.StatusCode != 200 || got.Header.Get("Upgrade") != "" {
		t.Fatalf("h2c upgrade: %d %+v %v", resp.StatusCode, got.Header, err)
	}
}

func TestCloseWithOpenFlows(t *testing.T) {
	s := settings(t, map[string]string{
		KeyAllow:    "api.example.com",
		KeyTCPAllow: "db.example.com:5432",
	})
	e := newEnv(t, s.Config(nil))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	raw, err := e.g.dialHost(ctx, "db.example.com:5432")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	io.WriteString(raw, "x")
	c := e.g.client(e.n.CACertPEM(), true)
	resp, err := c.Get("https://api.example.com/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	idle, err := e.g.dialHost(ctx, "api.example.com:443") // sniffing, no bytes yet
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	done := make(chan struct{})
	go func() {
		e.n.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs with open flows")
	}
	if err := e.n.AttachStream(nopConn{}); err == nil {
		t.Fatal("AttachStream after Close succeeded")
	}
}

type nopConn struct{ net.Conn }

func (nopConn) Close() error { return nil }
