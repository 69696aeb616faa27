package policy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func testLimits(mod func(*Limits)) Limits {
	l := DefaultLimits()
	mod(&l)
	return l
}

// countAudit counts the audit records whose reason contains sub.
func (e *env) countAudit(sub string) int {
	n := 0
	for _, r := range e.auditRecords() {
		if strings.Contains(r.Reason, sub) {
			n++
		}
	}
	return n
}

// Past tcp_flows established flows, new SYNs are reset and one audit
// record says so; a closed flow gives its slot back.
func TestTCPFlowLimit(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com"), Limits: testLimits(func(l *Limits) { l.TCPFlows = 4 })})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dst := netip.AddrPortFrom(apiIP, 80)
	var held []net.Conn
	for i := 0; i < 4; i++ {
		c, err := e.g.dialTCP(ctx, dst)
		if err != nil {
			t.Fatalf("flow %d within the limit: %v", i, err)
		}
		held = append(held, c)
	}
	waitFor(t, func() bool { return e.n.tcpFlows.count() == 4 })
	for i := 0; i < 20; i++ {
		if c, err := e.g.dialTCP(ctx, dst); err == nil {
			c.Close()
			t.Fatalf("flow %d past tcp_flows was accepted", i)
		}
	}
	// The refusal is audited just after the guest's RST is sent.
	waitFor(t, func() bool { return e.countAudit("limits.tcp_flows") > 0 })
	if got := e.countAudit("limits.tcp_flows"); got != 1 {
		t.Fatalf("%d audit records for 20 refusals, want 1:\n%s", got, e.audit)
	}
	held[0].Close()
	waitFor(t, func() bool { return e.n.tcpFlows.count() == 3 })
	c, err := e.g.dialTCP(ctx, dst)
	if err != nil {
		t.Fatalf("a slot given back was not reused: %v", err)
	}
	c.Close()
	for _, c := range held[1:] {
		c.Close()
	}
	waitFor(t, func() bool { return e.n.tcpFlows.count() == 0 })
}

// A resolver's one-query-per-source-port flood stays within udp_flows:
// idle flows are evicted to make room and every query is still answered.
func TestUDPDNSFlowsBounded(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com"), Limits: testLimits(func(l *Limits) { l.UDPFlows = 8 })})
	var peak atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if c := int64(e.n.udpFlows.count()); c > peak.Load() {
				peak.Store(c)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	for i := 0; i < 300; i++ {
		resp, err := e.g.query("api.example.com", dnsmessage.TypeA)
		if err != nil || resp.RCode != dnsmessage.RCodeSuccess {
			t.Fatalf("query %d: %v %v", i, resp.RCode, err)
		}
	}
	close(stop)
	if p := peak.Load(); p > 8 {
		t.Fatalf("%d UDP flows at once, limit 8", p)
	}
}

// When every UDP flow is busy answering, a new one is refused (the guest
// gets port unreachable) and the refusals are summarised.
func TestUDPFlowsRefusedWhenBusy(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	e := newEnv(t, Config{Mode: NetModeOpen, DNS: DNSOpen,
		DNSServers: []netip.AddrPort{netip.MustParseAddrPort(silent.LocalAddr().String())},
		Limits:     testLimits(func(l *Limits) { l.UDPFlows = 2 })})
	// Two questions the silent upstream keeps busy for dnsQueryTimeout.
	for i := 0; i < 2; i++ {
		go e.g.query(fmt.Sprintf("busy%d.example.com", i), dnsmessage.TypeA)
	}
	waitFor(t, func() bool { return e.n.udpFlows.count() == 2 && len(e.n.dnsSem) == 2 })
	for i := 0; i < 5; i++ {
		c, err := e.g.dialUDP(netip.AddrPortFrom(e.n.GuestConfig().Gateway, 53))
		if err != nil {
			t.Fatal(err)
		}
		msg := dnsmessage.Message{Header: dnsmessage.Header{ID: uint16(i)}, Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("refused.example.com."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
		b, _ := msg.Pack()
		c.Write(b)
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, err = c.Read(make([]byte, 512))
		c.Close()
		if err == nil {
			t.Fatalf("a UDP flow past udp_flows was answered (%d flows, %d busy)\n%s", e.n.udpFlows.count(), len(e.n.dnsSem), e.audit)
		}
	}
	if got := e.countAudit("limits.udp_flows"); got != 1 {
		t.Fatalf("%d audit records for the refusals, want 1:\n%s", got, e.audit)
	}
}

// DNS over TCP waits for the same dns_in_flight slots as UDP.
func TestDNSOverTCPInSemaphore(t *testing.T) {
	var inFlight, peak atomic.Int32
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				q, err := readDNSTCP(c)
				if err != nil {
					return
				}
				if v := inFlight.Add(1); v > peak.Load() {
					peak.Store(v)
				}
				time.Sleep(200 * time.Millisecond)
				inFlight.Add(-1)
				var p dnsmessage.Parser
				h, _ := p.Start(q)
				qs, _ := p.AllQuestions()
				writeDNSTCP(c, dnsReply(h, qs, dnsmessage.RCodeNameError, nil))
			}()
		}
	}()
	e := newEnv(t, Config{Mode: NetModeOpen, DNS: DNSOpen,
		DNSServers: []netip.AddrPort{netip.MustParseAddrPort(up.Addr().String())},
		Limits:     testLimits(func(l *Limits) { l.DNSInFlight = 2 })})
	e.dialer.routes = map[string]string{}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := e.g.dialTCP(ctx, netip.AddrPortFrom(e.n.GuestConfig().Gateway, 53))
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			msg := dnsmessage.Message{Header: dnsmessage.Header{ID: 7}, Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("x.example.com."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
			b, _ := msg.Pack()
			writeDNSTCP(c, b)
			if _, err := readDNSTCP(c); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > 2 {
		t.Fatalf("%d DNS-over-TCP questions upstream at once, dns_in_flight 2", p)
	}
}

// An HTTP header block past http_header_bytes is refused, and one that
// never ends is dropped after http_header_timeout.
func TestHTTPHeaderLimits(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com"), Limits: testLimits(func(l *Limits) {
		l.HTTPHeaderBytes = 8 << 10
		l.HTTPHeaderTimeout = time.Second
	})})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dst := netip.AddrPortFrom(apiIP, 80)

	big, err := e.g.dialTCP(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	big.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		io.WriteString(big, "GET / HTTP/1.1\r\nHost: api.example.com\r\nX-Pad: ")
		big.Write(bytes.Repeat([]byte("a"), 256<<10))
	}()
	resp, _ := io.ReadAll(big)
	if !strings.Contains(string(resp), "431") {
		t.Fatalf("a 256 KiB header block got %q, want 431", resp)
	}

	slow, err := e.g.dialTCP(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	io.WriteString(slow, "GET / HTTP/1.1\r\nHost: api.example.com\r\n")
	start := time.Now()
	slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.ReadAll(slow)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("an unfinished header block was held for %s, limit 1s", d)
	}
}

// Past audit_lines_per_second the records are counted, not written, and
// one summary says how many were left out.
func TestAuditRateLimited(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com"), Limits: testLimits(func(l *Limits) { l.AuditLinesPerSecond = 10 })})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	for i := 0; i < 200; i++ {
		// Port 9 is in no allow entry: refused, one denial each.
		if c, err := e.g.dialTCP(ctx, netip.AddrPortFrom(apiIP, 9)); err == nil {
			c.Close()
		}
	}
	elapsed := time.Since(start)
	waitFor(t, func() bool { return strings.Contains(e.audit.String(), `"decision":"suppressed"`) })
	recs := e.auditRecords()
	var denied, suppressed int
	for _, r := range recs {
		switch r.Decision {
		case Denied:
			denied++
		case Suppressed:
			suppressed++
			if !strings.Contains(r.Reason, "more records suppressed") {
				t.Errorf("summary %q", r.Reason)
			}
		}
	}
	// A second's burst plus what the run's length refilled, and one
	// summary per second at most.
	secs := int(elapsed/time.Second) + 2
	if denied > 10+10*secs || suppressed < 1 || suppressed > secs {
		t.Fatalf("%d denials and %d summaries written for 200 refusals at 10/s in %s:\n%s", denied, suppressed, elapsed, e.audit)
	}
}

// The audit file and its one rotated predecessor stay under the cap, and
// the newest record is kept.
func TestAuditFileCapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.jsonl")
	const capBytes = 16 << 10
	af, err := OpenAuditFile(path, capBytes)
	if err != nil {
		t.Fatal(err)
	}
	line := func(i int) []byte {
		return []byte(fmt.Sprintf(`{"n":%d,"pad":"%s"}`+"\n", i, strings.Repeat("x", 100)))
	}
	for i := 0; i < 5000; i++ {
		if _, err := af.Write(line(i)); err != nil {
			t.Fatal(err)
		}
	}
	af.Close()
	var total int64
	for _, p := range []string{path, path + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
	}
	if total > capBytes {
		t.Fatalf("audit files hold %d bytes, cap %d", total, capBytes)
	}
	b, _ := os.ReadFile(path)
	if !bytes.HasSuffix(b, line(4999)) {
		t.Fatal("the newest record is not in the live file")
	}
	// Reopened, a full file is rotated before the next record.
	af, err = OpenAuditFile(path, 200)
	if err != nil {
		t.Fatal(err)
	}
	af.Write(line(1))
	af.Close()
	if st, _ := os.Stat(path); st.Size() != int64(len(line(1))) {
		t.Fatalf("reopened past the cap: live file %d bytes", st.Size())
	}
}

// The shim's heap after 5,000 one-query DNS flows, each from its own
// source port, stays near where it started.
func TestUDPDNSFloodMemory(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com")})
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	for i := 0; i < 20; i++ {
		e.g.query("api.example.com", dnsmessage.TypeA)
	}
	before := heap()
	var maxFlows int
	for i := 0; i < 5000; i++ {
		c, err := e.g.dialUDP(netip.AddrPortFrom(e.n.GuestConfig().Gateway, 53))
		if err != nil {
			t.Fatal(err)
		}
		msg := dnsmessage.Message{Header: dnsmessage.Header{ID: uint16(i)}, Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("denied.example.net."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
		b, _ := msg.Pack()
		c.Write(b)
		c.Close()
		maxFlows = max(maxFlows, e.n.udpFlows.count())
	}
	after := heap()
	t.Logf("heap in use %d KiB before, %d KiB after 5,000 flows; at most %d UDP flows", before>>10, after>>10, maxFlows)
	if maxFlows > DefaultLimits().UDPFlows {
		t.Fatalf("%d UDP flows, limit %d", maxFlows, DefaultLimits().UDPFlows)
	}
	// Both stacks (the test's guest too) live in this process: allow
	// 32 MiB, where unbounded flows took hundreds.
	if after > before+32<<20 {
		t.Fatalf("heap grew from %d to %d KiB", before>>10, after>>10)
	}
	if n := e.countAudit("denied.example.net"); n > 2*DefaultLimits().AuditLinesPerSecond+50 {
		t.Fatalf("%d audit records for the flood", n)
	}
}

// Upstream connections are bounded across the container, whatever carries
// the guest's requests: past upstream_connections a request gets a 502 and
// one audit record, and a connection closed gives its slot back.
func TestUpstreamConnectionLimit(t *testing.T) {
	e := newEnv(t, Config{Allow: allow(t, "api.example.com"), Limits: testLimits(func(l *Limits) { l.UpstreamConnections = 3 })})
	c := e.g.client(nil, false)
	var held []*http.Response
	for i := 0; i < 3; i++ {
		resp, err := c.Get("http://api.example.com/stream")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d within the limit: %v %v", i, resp, err)
		}
		held = append(held, resp)
	}
	waitFor(t, func() bool { return e.n.upstreams.count() == 3 })
	for i := 0; i < 5; i++ {
		resp, err := c.Get("http://api.example.com/echo")
		if err != nil {
			t.Fatalf("request past the limit: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("request %d past upstream_connections: status %d, want 502", i, resp.StatusCode)
		}
	}
	waitFor(t, func() bool { return e.countAudit("limits.upstream_connections") > 0 })
	if got := e.countAudit("limits.upstream_connections"); got != 1 {
		t.Fatalf("%d audit records for 5 refusals, want 1:\n%s", got, e.audit)
	}
	close(e.up.streamRelease)
	for _, r := range held {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	c.CloseIdleConnections()
	e.n.Close()
	waitFor(t, func() bool { return e.n.upstreams.count() == 0 })
}
