package policy

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// fuzzDNSNetwork is a Network with only what DNS needs, whose upstream
// resolver answers every question with answer (its ID made to match), as
// a hostile or broken upstream might.
func fuzzDNSNetwork(tb testing.TB, mode NetMode, dns DNSMode, answer *[]byte) *Network {
	cfg := Config{
		Container:  "fuzz",
		Mode:       mode,
		DNS:        dns,
		Allow:      allow(tb, "api.example.com,*.example.org"),
		TCPAllow:   allow(tb, "db.example.com:5432"),
		DNSServers: []netip.AddrPort{netip.MustParseAddrPort("93.184.215.53:53")},
		AuditLog:   &bytes.Buffer{},
		Limits:     limitsWithDefaults(Limits{}),
	}
	cfg.Dialer = func(ctx context.Context, network, _ string) (net.Conn, error) {
		c, s := net.Pipe()
		go func() {
			defer s.Close()
			s.SetDeadline(time.Now().Add(time.Second))
			var q []byte
			if network == "tcp" {
				var err error
				if q, err = readDNSTCP(s); err != nil {
					return
				}
			} else {
				buf := make([]byte, 65535)
				m, err := s.Read(buf)
				if err != nil {
					return
				}
				q = buf[:m]
			}
			a := append([]byte(nil), *answer...)
			if len(a) >= 2 && len(q) >= 2 {
				copy(a, q[:2])
			}
			if network == "tcp" {
				writeDNSTCP(s, a)
			} else {
				s.Write(a)
			}
		}()
		return c, nil
	}
	n := &Network{cfg: cfg, synth: newSynthPool(), secrets: newSecretSet(nil), dnsSem: make(chan struct{}, 4)}
	n.policy = newPolicy(&n.cfg, nil, n.secrets)
	n.facts = netFacts{n}
	n.auditor = newAuditor(&n.cfg, n.secrets)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.addrs.Store(&linkAddrs{guest: defaultGuestAddress, gateway: defaultGateway})
	tb.Cleanup(n.cancel)
	return n
}

// FuzzDNS feeds a guest query and an upstream answer through every DNS
// mode, over UDP and TCP: nothing panics, synthetic answers only ever
// name allowed hosts with pool addresses, trusted mode asks upstream
// only about allowed names, and the records kept stay bounded.
func FuzzDNS(f *testing.F) {
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 1, RecursionDesired: true}, Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("api.example.com."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	qb, _ := q.Pack()
	a := q
	a.Response = true
	a.Answers = []dnsmessage.Resource{
		{Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("api.example.com."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60}, Body: &dnsmessage.AResource{A: [4]byte{127, 0, 0, 1}}},
		{Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("api.example.com."), Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET, TTL: 1 << 31}, Body: &dnsmessage.AAAAResource{AAAA: netip.MustParseAddr("64:ff9b:1::a9fe:a9fe").As16()}},
	}
	ab, _ := a.Pack()
	for mode := uint8(0); mode < 6; mode++ {
		f.Add(qb, ab, mode)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0}, []byte{}, uint8(1))
	f.Add(qb, []byte{0, 1, 0x80, 0, 0, 0, 0, 0xff, 0, 0, 0, 0}, uint8(2))

	dnsModes := []DNSMode{DNSSynthetic, DNSTrusted, DNSOpen}
	f.Fuzz(func(t *testing.T, query, answer []byte, mode uint8) {
		dm := dnsModes[int(mode)%3]
		nm := NetModePolicy
		if mode&8 != 0 {
			nm = NetModeOpen
		}
		overTCP := mode&16 != 0
		asked := 0
		n := fuzzDNSNetwork(t, nm, dm, &answer)
		dial := n.cfg.Dialer
		n.cfg.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
			asked++
			return dial(ctx, network, addr)
		}
		resp := n.answerDNS(context.Background(), query, overTCP)

		var p dnsmessage.Parser
		h, err := p.Start(query)
		var qs []dnsmessage.Question
		if err == nil {
			qs, err = p.AllQuestions()
		}
		if err != nil || h.Response || h.OpCode != 0 || len(qs) != 1 {
			if asked != 0 {
				t.Fatal("a malformed query reached the upstream resolver")
			}
			return
		}
		name, valid := normalizeHost(qs[0].Name.String())
		if dm == DNSTrusted && nm == NetModePolicy && (!valid || !n.policy.nameAllowed(name)) && !(valid && isLocalhost(name)) && asked != 0 {
			t.Fatalf("trusted DNS asked upstream about %q", qs[0].Name)
		}
		if dm == DNSSynthetic {
			if asked != 0 {
				t.Fatal("synthetic DNS asked upstream")
			}
			if resp == nil {
				return
			}
			var m dnsmessage.Message
			if err := m.Unpack(resp); err != nil {
				t.Fatalf("synthetic reply does not parse: %v", err)
			}
			for _, r := range m.Answers {
				ar, ok := r.Body.(*dnsmessage.AResource)
				if !ok {
					t.Fatalf("synthetic reply holds %v", r.Header.Type)
				}
				an, _ := normalizeHost(r.Header.Name.String())
				addr := netip.AddrFrom4(ar.A)
				if !(isLocalhost(an) && addr.IsLoopback()) && (!synthPrefix.Contains(addr) || !n.policy.nameAllowed(an)) {
					t.Fatalf("answered %s -> %s", an, addr)
				}
			}
		}
		n.records.mu.Lock()
		total := n.records.total
		n.records.mu.Unlock()
		if total > maxDNSRecords {
			t.Fatalf("%d DNS records kept", total)
		}
	})
}

// FuzzDNSTCPFraming feeds a guest's byte stream to the DNS-over-TCP
// server: it ends (on EOF or a bad frame) without panicking, and every
// reply it writes is a well-formed frame.
func FuzzDNSTCPFraming(f *testing.F) {
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 9}, Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("api.example.com."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	qb, _ := q.Pack()
	var framed bytes.Buffer
	writeDNSTCP(&framed, qb)
	writeDNSTCP(&framed, qb)
	f.Add(framed.Bytes())
	f.Add([]byte{0xff, 0xff, 1, 2, 3})
	f.Add([]byte{0, 0, 0, 0})
	empty := []byte{}
	n := fuzzDNSNetwork(f, NetModePolicy, DNSSynthetic, &empty)
	f.Fuzz(func(t *testing.T, stream []byte) {
		var out bytes.Buffer
		n.serveDNSTCP(&streamConn{r: bytes.NewReader(stream), w: &out})
		b := out.Bytes()
		for len(b) > 0 {
			if len(b) < 2 {
				t.Fatalf("truncated frame header in %x", out.Bytes())
			}
			l := int(binary.BigEndian.Uint16(b))
			if len(b) < 2+l {
				t.Fatalf("truncated frame in %x", out.Bytes())
			}
			var m dnsmessage.Message
			if err := m.Unpack(b[2 : 2+l]); err != nil {
				t.Fatalf("reply frame does not parse: %v", err)
			}
			b = b[2+l:]
		}
	})
}

// streamConn is a net.Conn reading a fixed stream and recording writes.
type streamConn struct {
	net.Conn
	r *bytes.Reader
	w *bytes.Buffer
}

func (c *streamConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *streamConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *streamConn) Close() error                     { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }
func (c *streamConn) SetDeadline(time.Time) error      { return nil }
