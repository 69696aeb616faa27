package policy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func TestIsInternal(t *testing.T) {
	internal := []string{
		"127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1",
		"169.254.169.254", "100.64.0.1", "100.127.255.255", "0.0.0.0", "0.1.2.3", "224.0.0.251",
		"239.255.255.250", "255.255.255.255", "240.0.0.1", "198.18.0.1", "198.19.0.5", "192.0.0.170",
		"::", "::1", "fd00:ec2::254", "fc00::1", "fe80::1", "ff02::1", "fec0::1",
		"::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.1.2.3", "::127.0.0.1",
		"64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "2002:7f00:1::", "2002:a9fe:a9fe::1",
	}
	public := []string{
		"1.1.1.1", "8.8.8.8", "93.184.215.10", "100.63.255.255", "100.128.0.0", "172.32.0.1",
		"198.20.0.1", "2606:4700:4700::1111", "::ffff:1.1.1.1", "64:ff9b::101:101", "2002:101:101::",
	}
	for _, s := range internal {
		if !isInternal(netip.MustParseAddr(s)) {
			t.Errorf("%s should be internal", s)
		}
	}
	for _, s := range public {
		if isInternal(netip.MustParseAddr(s)) {
			t.Errorf("%s should be public", s)
		}
	}
	if !isInternal(netip.Addr{}) {
		t.Error("the zero address should be internal")
	}
}

func TestInternalAllowed(t *testing.T) {
	s := settings(t, map[string]string{KeyAllowInternal: "10.0.0.0/8,metadata.internal:80,127.0.0.1"})
	cfg := s.Config(nil)
	c := newPolicy(&cfg, nil, nil)
	cases := []struct {
		host    string
		addr    string
		port    uint16
		blocked bool
	}{
		{"x", "10.1.2.3", 443, false},
		{"x", "::ffff:10.1.2.3", 443, false},
		{"x", "127.0.0.1", 22, false},
		{"x", "127.0.0.2", 22, true},
		{"metadata.internal", "169.254.169.254", 80, false},
		{"metadata.internal", "169.254.169.254", 8080, true},
		{"other", "169.254.169.254", 80, true},
		{"x", "1.1.1.1", 80, false},
		{"x", "::1", 80, true},
	}
	for _, tc := range cases {
		if got := c.addrBlocked(tc.host, netip.MustParseAddr(tc.addr), tc.port); got != tc.blocked {
			t.Errorf("addrBlocked(%s, %s, %d) = %v, want %v", tc.host, tc.addr, tc.port, got, tc.blocked)
		}
	}
}

func TestHostMatching(t *testing.T) {
	ps := allow(t, "api.github.com,*.npmjs.org,1.2.3.4,example.com:8443,[2001:db8::1]:443")
	cases := []struct {
		host string
		port uint16
		want bool
	}{
		{"api.github.com", 443, true},
		{"api.github.com", 80, true},
		{"api.github.com", 8080, false},
		{"github.com", 443, false},
		{"evilapi.github.com", 443, false},
		{"registry.npmjs.org", 443, true},
		{"a.b.npmjs.org", 443, true},
		{"npmjs.org", 443, false},
		{"evilnpmjs.org", 443, false},
		{"1.2.3.4", 80, true},
		{"1.2.3.5", 80, false},
		{"example.com", 8443, true},
		{"example.com", 443, false},
		{"2001:db8::1", 443, true},
		{"2001:db8::1", 80, false},
	}
	for _, tc := range cases {
		if got := allowMatch(ps, tc.host, tc.port); got != tc.want {
			t.Errorf("allowMatch(%s:%d) = %v, want %v", tc.host, tc.port, got, tc.want)
		}
	}
	for in, want := range map[string]string{
		"API.GitHub.com.": "api.github.com", "[::1]": "::1", "::ffff:1.2.3.4": "1.2.3.4", "a_b.example": "a_b.example",
	} {
		if got, ok := normalizeHost(in); !ok || got != want {
			t.Errorf("normalizeHost(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "evil.com@api.github.com", "a..b", "a b", "x/y", "fe80::1%eth0", strings.Repeat("a", 64) + ".com"} {
		if got, ok := normalizeHost(bad); ok {
			t.Errorf("normalizeHost(%q) = %q, want invalid", bad, got)
		}
	}
}

func TestClassifyHTTP(t *testing.T) {
	for in, want := range map[string]httpGuess{
		"GET / HTTP/1.1": httpYes, "PRI * HTTP/2.0": httpYes, "M-SEARCH * HTTP/1.1": httpYes,
		"GE": httpMore, "get / HTTP/1.1": httpNo, "SSH-2.0-x": httpNo, "\x00\x00": httpNo,
		"GO ": httpNo, strings.Repeat("A", 30): httpNo,
	} {
		if got := classifyHTTP([]byte(in)); got != want {
			t.Errorf("classifyHTTP(%q) = %v, want %v", in, got, want)
		}
	}
}

// clientHello captures a real ClientHello for server name sniffing.
func clientHello(t testing.TB, sni string) []byte {
	c1, c2 := net.Pipe()
	go func() {
		tls.Client(c1, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
		c1.Close()
	}()
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	h := make([]byte, 5)
	if _, err := readFull(c2, h); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(binary.BigEndian.Uint16(h[3:])))
	if _, err := readFull(c2, body); err != nil {
		t.Fatal(err)
	}
	c2.Close()
	return append(h, body...)
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func TestPeekProtocolAndSNI(t *testing.T) {
	hello := clientHello(t, "api.example.com")
	r := bufio.NewReaderSize(bytes.NewReader(hello), 5+maxTLSRecord)
	if kind, err := peekProtocol(r); kind != protoTLS || err != nil {
		t.Fatalf("ClientHello classified %v, %v", kind, err)
	}
	if sni := peekSNI(r); sni != "api.example.com" {
		t.Fatalf("SNI %q", sni)
	}
	r = bufio.NewReaderSize(bytes.NewReader([]byte("POST /x HTTP/1.1\r\n")), 5+maxTLSRecord)
	if kind, _ := peekProtocol(r); kind != protoHTTP {
		t.Fatalf("POST classified %v", kind)
	}
	if b, _ := r.Peek(4); string(b) != "POST" {
		t.Fatal("peek consumed bytes")
	}
}

func FuzzPeekProtocol(f *testing.F) {
	f.Add(clientHello(f, "example.com"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5})
	f.Add([]byte("SSH-2.0-OpenSSH\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(b), 5+maxTLSRecord)
		kind, _ := peekProtocol(r)
		if kind == protoTLS {
			peekSNI(r)
		}
		if kind == protoHTTP && classifyHTTP(b) != httpYes {
			t.Fatalf("%q classified HTTP", b)
		}
	})
}

func FuzzHostMatch(f *testing.F) {
	f.Add("*.example.com", "a.example.com", uint16(443))
	f.Add("example.com:8443", "EXAMPLE.com.", uint16(8443))
	f.Add("1.2.3.4", "::ffff:1.2.3.4", uint16(80))
	f.Fuzz(func(t *testing.T, pattern, host string, port uint16) {
		s, err := parseRules(map[string]string{KeyAllow: pattern})
		if err != nil {
			return
		}
		h, ok := normalizeHost(host)
		if !ok {
			return
		}
		for _, p := range s.Allow {
			if !allowMatch([]HostPattern{p}, h, port) {
				continue
			}
			// A match is the exact name, a strict subdomain, or the IP.
			switch {
			case p.IP.IsValid():
				if netip.MustParseAddr(h) != p.IP.Unmap() {
					t.Fatalf("%s matched %s", p, h)
				}
			case p.Wildcard:
				if !strings.HasSuffix(h, "."+p.Host) || h == p.Host {
					t.Fatalf("%s matched %s", p, h)
				}
			default:
				if h != p.Host {
					t.Fatalf("%s matched %s", p, h)
				}
			}
		}
	})
}

func FuzzAnswerDNS(f *testing.F) {
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 1}, Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("api.example.com."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	b, _ := q.Pack()
	f.Add(b)
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0})
	n := &Network{cfg: Config{DNS: DNSSynthetic, Mode: NetModePolicy, Allow: allow(f, "api.example.com,*.example.org")}, synth: newSynthPool(), secrets: newSecretSet(nil)}
	n.cfg.AuditLog = &syncBuffer{}
	n.auditor = newAuditor(&n.cfg, n.secrets)
	n.policy = newPolicy(&n.cfg, nil, n.secrets)
	n.ctx = context.Background()
	f.Fuzz(func(t *testing.T, b []byte) {
		resp := n.answerDNS(context.Background(), b, false)
		if resp == nil {
			return
		}
		var m dnsmessage.Message
		if err := m.Unpack(resp); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		for _, a := range m.Answers {
			if r, ok := a.Body.(*dnsmessage.AResource); ok {
				addr := netip.AddrFrom4(r.A)
				name, _ := normalizeHost(a.Header.Name.String())
				if !isLocalhost(name) && (!synthPrefix.Contains(addr) || !n.policy.nameAllowed(name)) {
					t.Fatalf("answered %s -> %s", name, addr)
				}
			}
		}
	})
}

func TestFrameStreamRejectsBadFrames(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com")})
	// A second stream replaces the first: send garbage on it, then make
	// sure a fresh stream still works.
	host, bad := socketPair(t)
	if err := e.n.AttachStream(host); err != nil {
		t.Fatal(err)
	}
	var junk bytes.Buffer
	for _, l := range []uint32{3, 70000, 60} {
		binary.Write(&junk, binary.BigEndian, l)
		junk.Write(make([]byte, l))
	}
	binary.Write(&junk, binary.BigEndian, uint32(1<<30))
	bad.Write(junk.Bytes())
	bad.Close()
	host2, guest2 := socketPair(t)
	if err := e.n.AttachStream(host2); err != nil {
		t.Fatal(err)
	}
	g := newTestGuest(t, guest2, e.n.GuestConfig())
	if _, err := g.lookup("api.example.com"); err != nil {
		t.Fatalf("network unusable after bad frames: %v", err)
	}
}
