package policy

import (
	"context"
	"encoding/csv"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// ianaEntry is one row of testdata/iana-special-purpose.csv.
type ianaEntry struct {
	prefix netip.Prefix
	name   string
	// reachable is "True", "False" or "N/A", as the registry says.
	reachable string
}

func readIANA(t testing.TB) []ianaEntry {
	t.Helper()
	f, err := os.Open("testdata/iana-special-purpose.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.Comment = '#'
	rows, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var out []ianaEntry
	for _, row := range rows {
		if len(row) != 4 {
			t.Fatalf("row %q: want 4 fields", row)
		}
		out = append(out, ianaEntry{prefix: netip.MustParsePrefix(row[0]), name: row[1], reachable: row[3]})
	}
	if len(out) < 50 {
		t.Fatalf("only %d registry entries", len(out))
	}
	return out
}

// samples returns the first and last address of p and random ones inside.
func samples(rng *rand.Rand, p netip.Prefix, n int) []netip.Addr {
	p = p.Masked()
	first := p.Addr()
	b := first.AsSlice()
	last := make([]byte, len(b))
	copy(last, b)
	for i := p.Bits(); i < len(b)*8; i++ {
		last[i/8] |= 0x80 >> (i % 8)
	}
	la, _ := netip.AddrFromSlice(last)
	out := []netip.Addr{first, la}
	for k := 0; k < n; k++ {
		r := make([]byte, len(b))
		copy(r, b)
		for i := p.Bits(); i < len(b)*8; i++ {
			if rng.IntN(2) == 1 {
				r[i/8] |= 0x80 >> (i % 8)
			}
		}
		a, _ := netip.AddrFromSlice(r)
		out = append(out, a)
	}
	return out
}

// embeddedVerdict is what an address judged by its embedded IPv4 must get.
func embeddedVerdict(a netip.Addr) bool {
	v4s, _ := embeddedIPv4s(a)
	for _, v := range v4s {
		if isInternal(v) {
			return true
		}
	}
	return false
}

// The classification holds to the IANA special-purpose registries: every
// block not globally reachable is internal, whole; a globally reachable
// block outside those is not; IPv4-mapped, NAT64 and 6to4 addresses are
// judged by the IPv4 address they carry.
func TestInternalAgainstIANARegistries(t *testing.T) {
	entries := readIANA(t)
	rng := rand.New(rand.NewPCG(1, 2))
	covered := func(a netip.Addr, want string) bool {
		for _, e := range entries {
			if e.reachable == want && e.prefix.Contains(a) {
				return true
			}
		}
		return false
	}
	for _, e := range entries {
		for _, a := range samples(rng, e.prefix, 200) {
			got := isInternal(a)
			var want bool
			switch {
			case e.prefix == netip.MustParsePrefix("::ffff:0:0/96"),
				e.prefix == netip.MustParsePrefix("64:ff9b::/96"),
				e.prefix == netip.MustParsePrefix("2002::/16"):
				want = embeddedVerdict(a)
			case e.reachable == "False":
				want = true
			case covered(a, "False"):
				// A reachable entry inside a block that is not is
				// internal with its block.
				want = true
			case e.reachable == "N/A" || covered(a, "N/A"):
				// The deprecated 6to4 relay anycast block (and the
				// 6a44 relay inside it) is refused whole.
				want = true
			default:
				want = false
			}
			if got != want {
				t.Errorf("%s (%s, globally reachable %s): internal = %v, want %v", a, e.name, e.reachable, got, want)
			}
		}
	}
	// Outside the registries: multicast and IPv6 outside global unicast
	// are internal; other addresses are public.
	for i := 0; i < 20000; i++ {
		var a netip.Addr
		if i%2 == 0 {
			var b [4]byte
			for j := range b {
				b[j] = byte(rng.IntN(256))
			}
			a = netip.AddrFrom4(b)
		} else {
			var b [16]byte
			for j := range b {
				b[j] = byte(rng.IntN(256))
			}
			if i%4 == 1 {
				b[0] = 0x20 | b[0]&0x1f // global unicast
			}
			a = netip.AddrFrom16(b)
		}
		var want bool
		switch {
		case a.Is4In6(), nat64Prefix.Contains(a), sixToFourPref.Contains(a):
			want = embeddedVerdict(a)
		case covered(a, "False"), covered(a, "N/A"):
			want = true
		case a.Is4() && netip.MustParsePrefix("224.0.0.0/4").Contains(a):
			want = true
		case a.Is6() && !netip.MustParsePrefix("2000::/3").Contains(a):
			want = true
		}
		if got := isInternal(a); got != want {
			t.Errorf("%s: internal = %v, want %v", a, got, want)
		}
	}
}

// The IPv4 address inside each IPv6 form, from the RFCs' own examples.
func TestEmbeddedIPv4Decoding(t *testing.T) {
	cases := []struct {
		v6          string
		v4          []string
		translation bool
	}{
		// RFC 6052 section 2.4: 192.0.2.33 under a /96 and a /48 prefix
		// (the /48 form skips the u octet, bits 64-71).
		{"64:ff9b::192.0.2.33", []string{"192.0.2.33"}, true},
		{"64:ff9b:1:c000:2:2100::", []string{"192.0.2.33"}, true},
		{"64:ff9b:1:a9fe:a9:fe00::", []string{"169.254.169.254"}, true},
		{"64:ff9b:1:0808:08:0800::", []string{"8.8.8.8"}, true},
		// RFC 4380 section 4: server 65.54.227.120, client 192.0.2.45.
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", []string{"65.54.227.120", "192.0.2.45"}, false},
		{"2002:a9fe:a9fe::1", []string{"169.254.169.254"}, false},
		{"::ffff:10.1.2.3", []string{"10.1.2.3"}, true},
		{"::ffff:0:10.1.2.3", []string{"10.1.2.3"}, true},
		{"::10.1.2.3", []string{"10.1.2.3"}, false},
		{"2606:4700::1111", nil, false},
	}
	for _, tc := range cases {
		got, tr := embeddedIPv4s(netip.MustParseAddr(tc.v6))
		var gs []string
		for _, a := range got {
			gs = append(gs, a.String())
		}
		if strings.Join(gs, ",") != strings.Join(tc.v4, ",") || tr != tc.translation {
			t.Errorf("%s: embedded %v (translation %v), want %v (%v)", tc.v6, gs, tr, tc.v4, tc.translation)
		}
	}
	// The local-use NAT64 prefix is internal whatever it carries; the
	// well-known one only when what it carries is.
	for s, want := range map[string]bool{
		"64:ff9b:1:0808:08:0800::":             true,
		"64:ff9b::8.8.8.8":                     false,
		"64:ff9b::169.254.169.254":             true,
		"2001:0:4136:e378:8000:63bf:3fff:fdd2": true,
		"::ffff:0:8.8.8.8":                     true,
		"2002:808:808::1":                      false,
		"2002:c0a8:101::1":                     true,
	} {
		if got := isInternal(netip.MustParseAddr(s)); got != want {
			t.Errorf("isInternal(%s) = %v, want %v", s, got, want)
		}
	}
}

// An allow-internal entry for an IPv4 address covers the IPv6 forms that
// stand for that host (mapped, NAT64), not the 6to4 or Teredo ones, which
// stand for other hosts behind it.
func TestInternalAllowedEmbedded(t *testing.T) {
	cfg := settings(t, map[string]string{KeyAllowInternal: "10.0.0.5,192.168.0.0/16"}).Config(nil)
	c := newPolicy(&cfg, nil, nil)
	for s, blocked := range map[string]bool{
		"10.0.0.5":                 false,
		"::ffff:10.0.0.5":          false,
		"64:ff9b::10.0.0.5":        false,
		"64:ff9b:1:a00:0:500::":    false,
		"64:ff9b:1:c0a8:1:100::":   false,
		"2002:a00:5::1":            true,
		"2001:0:a00:5::":           true,
		"10.0.0.6":                 true,
		"64:ff9b:1:a00:0:600::":    true,
		"64:ff9b::169.254.169.254": true,
	} {
		if got := c.addrBlocked("", netip.MustParseAddr(s), 80); got != blocked {
			t.Errorf("addrBlocked(%s) = %v, want %v", s, got, blocked)
		}
	}
}

// The host's own addresses are internal, bare or embedded, and a reading
// that fails keeps the last one.
func TestHostAddrsInternal(t *testing.T) {
	host := netip.MustParseAddr("93.184.215.99")
	fail := false
	read := func(context.Context) ([]netip.Addr, error) {
		if fail {
			return nil, errors.New("netlink says no")
		}
		return []netip.Addr{host, netip.MustParseAddr("2606:4700::99")}, nil
	}
	set, err := newHostAddrSet(context.Background(), read, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	c := newPolicy(&Config{}, set, nil)
	for s, want := range map[string]bool{
		"93.184.215.99":        true,
		"::ffff:93.184.215.99": true,
		"64:ff9b::5db8:d763":   true,
		"2002:5db8:d763::1":    true,
		"2606:4700::99":        true,
		"93.184.215.98":        false,
	} {
		if got := c.isInternal(netip.MustParseAddr(s)); got != want {
			t.Errorf("isInternal(%s) = %v, want %v", s, got, want)
		}
	}
	fail = true
	set.mu.Lock()
	set.readAt = set.readAt.Add(-2 * hostAddrsTTL)
	set.mu.Unlock()
	if !c.isInternal(host) {
		t.Error("a failed reading dropped the host's address")
	}
	if _, err := newHostAddrSet(context.Background(), read, func(string, ...any) {}); err == nil {
		t.Error("a network whose host addresses cannot be read started")
	}
	c = newPolicy(&Config{AllowInternal: []HostPattern{{IP: host, Port: 8080}}}, set, nil)
	if c.addrBlocked("", host, 8080) || !c.addrBlocked("", host, 22) {
		t.Error("allow-internal names the host's address on 8080 only")
	}
}

func FuzzIsInternal(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "::ffff:127.0.0.1", "64:ff9b:1:c000:2:2100::", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2002:7f00:1::", "2606:4700::1111", "fe80::1%eth0"} {
		f.Add(s)
	}
	host := netip.MustParseAddr("93.184.215.99")
	set, _ := newHostAddrSet(context.Background(), func(context.Context) ([]netip.Addr, error) { return []netip.Addr{host}, nil }, func(string, ...any) {})
	c := newPolicy(&Config{}, set, nil)
	f.Fuzz(func(t *testing.T, s string) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return
		}
		got := isInternal(a)
		a0 := a.WithZone("")
		if a0.Is4In6() && got != isInternal(a0.Unmap()) {
			t.Fatalf("%s and its IPv4 address disagree", a)
		}
		for _, p := range internalRanges {
			if p.Contains(a0) && !got {
				t.Fatalf("%s is in %s but not internal", a, p)
			}
		}
		v4s, _ := embeddedIPv4s(a)
		for _, v := range v4s {
			if !v.Is4() {
				t.Fatalf("%s: embedded %s is not IPv4", a, v)
			}
			if isInternal(v) && !got {
				t.Fatalf("%s carries internal %s but is not internal", a, v)
			}
			if v == host && !c.isInternal(a) {
				t.Fatalf("%s carries the host's address", a)
			}
		}
		if got && !c.isInternal(a) {
			t.Fatalf("%s: Policy.isInternal is weaker than isInternal", a)
		}
		// An address named by allow-internal is never blocked; one not
		// internal never is either.
		c2 := newPolicy(&Config{AllowInternalRanges: []netip.Prefix{netip.PrefixFrom(a0, a0.BitLen())}}, nil, nil)
		if c2.addrBlocked("", a, 1) {
			t.Fatalf("%s blocked though allow-internal names it", a)
		}
		plain := newPolicy(&Config{}, nil, nil)
		if !got && plain.addrBlocked("", a, 1) {
			t.Fatalf("%s blocked though not internal", a)
		}
	})
}

// Host patterns and allow-internal lists parse without panicking, and
// what they parse to matches what they name.
func FuzzInternalList(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8,metadata.internal:80,127.0.0.1", "[::1]:22", "*.corp.example", "fe80::1%eth0", "::ffff:10.0.0.0/104", "1.2.3.4:0", "a..b", "[1.2.3.4]:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, key := range []string{KeyAllowInternal, KeyAllow, KeyTCPAllow} {
			st, err := parseRules(map[string]string{key: s})
			if err != nil {
				continue
			}
			c := st.Config(nil)
			pol := newPolicy(&c, nil, nil)
			for _, p := range append(append(append([]HostPattern(nil), c.AllowInternal...), c.Allow...), c.TCPAllow...) {
				if p.IP.IsValid() {
					if p.IP.Zone() != "" || p.IP.Is4In6() {
						t.Fatalf("%q: pattern IP %s not normalised", s, p.IP)
					}
					if p.Host != "" || p.Wildcard {
						t.Fatalf("%q: pattern both IP and name", s)
					}
					continue
				}
				if _, ok := normalizeHost(p.Host); !ok {
					t.Fatalf("%q: pattern host %q would never match", s, p.Host)
				}
			}
			for _, r := range c.AllowInternalRanges {
				if r != r.Masked() || r.Addr().Is4In6() {
					t.Fatalf("%q: range %s not normalised", s, r)
				}
				if pol.addrBlocked("", r.Addr(), 1) {
					t.Fatalf("%q: %s blocked though allow-internal names it", s, r.Addr())
				}
			}
			for _, p := range c.AllowInternal {
				if p.IP.IsValid() {
					port := p.Port
					if port == 0 {
						port = 1
					}
					if pol.addrBlocked("", p.IP, port) {
						t.Fatalf("%q: %s blocked though allow-internal names it", s, p.IP)
					}
				}
			}
		}
	})
}

// The finding: on a host whose outside address is an ordinary public one,
// net.allow=<that address>:PORT (or its name, or tcp-allow, or open mode,
// or UDP) without allow-internal must not reach it.
func TestHostAddrsRefusedInEveryMode(t *testing.T) {
	hostAddrs := func(context.Context) ([]netip.Addr, error) { return []netip.Addr{apiIP, dbIP}, nil }
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, mode := range []NetMode{NetModePolicy, NetModeOpen} {
		t.Run(string(mode), func(t *testing.T) {
			e := newEnv(t, Config{Mode: mode, HostAddrs: hostAddrs,
				Allow:    allow(t, "api.example.com,93.184.215.10:80"),
				TCPAllow: allow(t, "db.example.com:5432,93.184.215.20:5432")})
			c := e.g.client(e.n.CACertPEM(), false)
			for _, url := range []string{"http://api.example.com/echo", "https://api.example.com/echo", "http://93.184.215.10/echo"} {
				resp, err := c.Get(url)
				if err == nil {
					body := readBody(t, resp)
					if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, KeyAllowInternal) {
						t.Fatalf("%s on the host's address: %d %q", url, resp.StatusCode, body)
					}
				}
			}
			for _, ap := range []netip.AddrPort{netip.AddrPortFrom(dbIP, 5432), netip.AddrPortFrom(apiIP, 80)} {
				if conn, err := e.g.dialTCP(ctx, ap); err == nil {
					conn.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
					conn.SetReadDeadline(time.Now().Add(3 * time.Second))
					b, _ := io.ReadAll(conn)
					conn.Close()
					if strings.Contains(string(b), "200 OK") || strings.Contains(string(b), "hello") {
						t.Fatalf("%s: reached the host: %q", ap, b)
					}
				}
			}
			if a, err := e.g.lookup("db.example.com"); err == nil {
				if conn, err := e.g.dialTCP(ctx, netip.AddrPortFrom(a, 5432)); err == nil {
					conn.Close()
					t.Fatal("tcp-allow by name reached the host's address")
				}
			}
			uc, err := e.g.dialUDP(netip.AddrPortFrom(dbIP, 7))
			if err != nil {
				t.Fatal(err)
			}
			uc.SetDeadline(time.Now().Add(time.Second))
			uc.Write([]byte("datagram"))
			if _, err := uc.Read(make([]byte, 64)); err == nil {
				t.Fatal("UDP reached the host's address")
			}
			uc.Close()
			for _, a := range []string{"93.184.215.10", "93.184.215.20"} {
				if e.dialer.attempted(a) {
					t.Fatalf("an upstream dial to the host's address %s was attempted", a)
				}
			}
		})
	}
	// Named in allow-internal, the host's address is reachable.
	e := newEnv(t, Config{HostAddrs: hostAddrs, Allow: allow(t, "api.example.com"), AllowInternal: allow(t, "93.184.215.10:80")})
	resp, err := e.g.client(e.n.CACertPEM(), false).Get("http://api.example.com/echo")
	if err != nil {
		t.Fatal(err)
	}
	if readBody(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("allow-internal for the host's address: %d", resp.StatusCode)
	}
}
