package runtime

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/earendil-works/gondolin-containerd/config"
	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// fakeSocket stands for a namespace-side socket.
type fakeSocket struct {
	k      ingressPort
	closed *map[ingressPort]int
}

func (f fakeSocket) Close() error { (*f.closed)[f.k]++; return nil }

// testPublisher is a publisher whose sockets are fakes; bindFails names
// ports that fail to bind, as ports the namespace already uses do.
func testPublisher(rules ingressRules, bindFails map[ingressPort]bool) (*publisher, *map[ingressPort]int) {
	closed := map[ingressPort]int{}
	quiet := logrus.New()
	quiet.Out = io.Discard
	p := newPublisher(nil, logrus.NewEntry(quiet), rules, config.DefaultLimits())
	p.open = func(_ context.Context, k ingressPort) (io.Closer, error) {
		if bindFails[k] {
			return nil, syscall.EADDRINUSE
		}
		return fakeSocket{k: k, closed: &closed}, nil
	}
	return p, &closed
}

func ports(from, to uint32) []uint32 {
	var out []uint32
	for p := from; p <= to; p++ {
		out = append(out, p)
	}
	return out
}

func TestIngressPublishesAtMostTheLimit(t *testing.T) {
	p, _ := testPublisher(ingressRules{limit: 256, minPort: 1024}, nil)
	ctx := context.Background()
	// 300 TCP and 100 UDP listeners: the first 256 (TCP first, by port).
	p.reconcile(ctx, ports(20000, 20299), ports(30000, 30099))
	if n := len(p.published); n != 256 {
		t.Fatalf("published %d ports, want the limit, 256", n)
	}
	if _, ok := p.published[ingressPort{port: 20255}]; !ok {
		t.Fatal("TCP 20255 should be published (ascending order)")
	}
	if _, ok := p.published[ingressPort{port: 20256}]; ok {
		t.Fatal("TCP 20256 is past the limit")
	}
	// Ports already published stay when the guest adds lower ones.
	p.reconcile(ctx, append(ports(20000, 20299), 10000), nil)
	if _, ok := p.published[ingressPort{port: 20000}]; !ok || len(p.published) != 256 {
		t.Fatalf("a published port was dropped for a new one: %d published", len(p.published))
	}
	if _, ok := p.published[ingressPort{port: 10000}]; ok {
		t.Fatal("a port past the limit was published")
	}
	// The guest stops listening: everything is closed.
	p.reconcile(ctx, nil, nil)
	if len(p.published) != 0 {
		t.Fatalf("%d ports still published", len(p.published))
	}
}

func TestIngressRefusesPrivilegedAndInvalidPorts(t *testing.T) {
	p, _ := testPublisher(ingressRules{limit: 256, minPort: 1024}, nil)
	// 65616 is 80 modulo 2^16: it must not become port 80.
	p.reconcile(context.Background(), []uint32{22, 80, 1023, 1024, 0, 65536 + 80, 1 << 31}, []uint32{53, 5353})
	want := map[ingressPort]bool{{port: 1024}: true, {udp: true, port: 5353}: true}
	if len(p.published) != len(want) {
		t.Fatalf("published %v, want %v", p.published, want)
	}
	for k := range want {
		if _, ok := p.published[k]; !ok {
			t.Fatalf("%s not published", k)
		}
	}
}

func TestIngressBindFailureIsRetried(t *testing.T) {
	busy := map[ingressPort]bool{{port: 8080}: true}
	p, _ := testPublisher(ingressRules{limit: 256, minPort: 1024}, busy)
	p.reconcile(context.Background(), []uint32{8080, 8081}, nil)
	if len(p.published) != 1 {
		t.Fatalf("published %v", p.published)
	}
	delete(busy, ingressPort{port: 8080})
	p.reconcile(context.Background(), []uint32{8080, 8081, 8082}, nil)
	if len(p.published) != 3 {
		t.Fatalf("the port that was busy was not retried: %v", p.published)
	}
}

func TestIngressRulesFor(t *testing.T) {
	limits := config.DefaultLimits()
	withCap := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE"}}}}
	noCap := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_CHOWN"}}}}
	sysctl := &specs.Spec{Process: noCap.Process, Linux: &specs.Linux{Sysctl: map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"}}}
	sysctl443 := &specs.Spec{Process: noCap.Process, Linux: &specs.Linux{Sysctl: map[string]string{"net.ipv4.ip_unprivileged_port_start": "443"}}}
	for _, tc := range []struct {
		name string
		spec *specs.Spec
		host bool
		want uint16
	}{
		{"own namespace, CAP_NET_BIND_SERVICE", withCap, false, 1},
		{"own namespace, no capability", noCap, false, 1024},
		{"own namespace, unprivileged_port_start=0", sysctl, false, 1},
		{"own namespace, unprivileged_port_start=443", sysctl443, false, 443},
		{"host network, CAP_NET_BIND_SERVICE", withCap, true, 1024},
		{"host network, unprivileged_port_start=0", sysctl, true, 1024},
		{"no spec", nil, false, 1024},
	} {
		r := ingressRulesFor(tc.spec, tc.host, limits)
		if r.minPort != tc.want || r.limit != limits.PublishedPorts {
			t.Errorf("%s: %+v, want minPort %d, limit %d", tc.name, r, tc.want, limits.PublishedPorts)
		}
	}
}

func TestNetNSIsHost(t *testing.T) {
	if host, err := (&netNS{}).isHost(); err != nil || !host {
		t.Fatalf("no namespace in the spec: host=%v, %v", host, err)
	}
	f, err := os.Open("/proc/self/ns/net")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	if host, err := (&netNS{f: f}).isHost(); err != nil || !host {
		t.Fatalf("the shim's own namespace by path: host=%v, %v", host, err)
	}
}

// FuzzIngressPlan feeds the publisher arbitrary guest port lists, one
// report after another, and checks what it would publish: never more than
// the limit, never a port outside the rules, every published port one the
// guest reported last, and all of the report when it fits.
func FuzzIngressPlan(f *testing.F) {
	enc := func(tcp, udp []uint32) []byte {
		b := []byte{byte(len(tcp))}
		for _, p := range append(tcp, udp...) {
			b = binary.BigEndian.AppendUint32(b, p)
		}
		return b
	}
	f.Add(uint8(4), uint16(1024), enc([]uint32{80, 8080, 65616}, []uint32{53}))
	f.Add(uint8(1), uint16(1), enc([]uint32{1, 2, 3, 3, 3}, []uint32{0, 70000}))
	f.Add(uint8(255), uint16(1024), enc(ports(1000, 1100), ports(60000, 60100)))
	f.Fuzz(func(t *testing.T, limit uint8, minPort uint16, data []byte) {
		rules := ingressRules{limit: int(limit%64) + 1, minPort: max(minPort, 1)}
		busy := map[ingressPort]bool{{port: 8080}: true}
		p, closed := testPublisher(rules, busy)
		// data is a sequence of reports: a count of TCP entries, then
		// big-endian uint32 entries (TCP first, then UDP) until a 0xffffffff
		// separator or the end.
		for len(data) > 0 {
			nTCP := int(data[0])
			data = data[1:]
			var tcp, udp []uint32
			for len(data) >= 4 {
				v := binary.BigEndian.Uint32(data)
				data = data[4:]
				if v == 0xffffffff {
					break
				}
				if len(tcp) < nTCP {
					tcp = append(tcp, v)
				} else {
					udp = append(udp, v)
				}
			}
			if len(data) < 4 {
				data = nil
			}
			p.reconcile(context.Background(), tcp, udp)
			check(t, p, rules, busy, tcp, udp)
		}
		p.closeAll()
		for k, n := range *closed {
			if n != 1 {
				t.Fatalf("%s closed %d times", k, n)
			}
		}
	})
}

func check(t *testing.T, p *publisher, r ingressRules, busy map[ingressPort]bool, tcp, udp []uint32) {
	t.Helper()
	if len(p.published) > r.limit {
		t.Fatalf("%d ports published, limit %d", len(p.published), r.limit)
	}
	reported := map[ingressPort]bool{}
	for i, list := range [2][]uint32{tcp, udp} {
		for _, v := range list {
			if v > 0 && v <= 65535 && uint16(v) >= r.minPort {
				reported[ingressPort{udp: i == 1, port: uint16(v)}] = true
			}
		}
	}
	for k := range p.published {
		if k.port < r.minPort || k.port == 0 {
			t.Fatalf("%s published below the minimum %d", k, r.minPort)
		}
		if !reported[k] {
			t.Fatalf("%s published but not in the guest's report", k)
		}
		if busy[k] {
			t.Fatalf("%s published although it failed to bind", k)
		}
	}
	fits := len(reported) <= r.limit
	for k := range reported {
		if _, ok := p.published[k]; !ok && fits && !busy[k] {
			t.Fatalf("%s reported, allowed and within the limit but not published", k)
		}
	}
}

// A guest whose list changes as fast as it can answer is acted on at most
// guest_events_per_second times a second.
func TestIngressFollowIsRateLimited(t *testing.T) {
	p, _ := testPublisher(ingressRules{limit: 256, minPort: 1024}, nil)
	var calls int
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	p.follow(ctx, rate.NewLimiter(10, 10), func(context.Context, uint64) (*api.Listeners, error) {
		calls++
		return &api.Listeners{Generation: uint64(calls), TcpPorts: []uint32{uint32(2000 + calls%2)}}, nil
	})
	// A burst of 10, then 10 a second.
	if most := 10 + int(time.Since(start).Seconds()*10) + 1; calls > most {
		t.Fatalf("%d lists acted on in %s, want at most %d", calls, time.Since(start), most)
	}
	if calls < 10 {
		t.Fatalf("only %d lists acted on", calls)
	}
}

// Connections into a published port past limits.tcp_flows are closed at
// once; the ones being forwarded are not disturbed.
func TestIngressConnectionsBounded(t *testing.T) {
	p, _ := testPublisher(ingressRules{limit: 256, minPort: 1}, nil)
	p.maxTCPConns = 2
	var mu sync.Mutex
	var inside []net.Conn
	p.dialGuest = func(context.Context, uint16) (net.Conn, error) {
		a, b := net.Pipe()
		mu.Lock()
		inside = append(inside, b)
		mu.Unlock()
		return a, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.serve(ctx, ln, 80)
	var clients []net.Conn
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
		time.Sleep(20 * time.Millisecond) // accepted in this order
	}
	closed := 0
	for _, c := range clients {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, io.EOF) {
			closed++
		}
	}
	mu.Lock()
	forwarded := len(inside)
	mu.Unlock()
	if forwarded != 2 || closed != 3 {
		t.Fatalf("%d connections forwarded, %d closed; want 2 and 3", forwarded, closed)
	}
	// One forwarded connection ends (the client and the guest close): a
	// new one is accepted.
	clients[0].Close()
	mu.Lock()
	inside[0].Close()
	mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for p.tcpConns.Load() > 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for time.Now().Before(deadline) {
		mu.Lock()
		forwarded = len(inside)
		mu.Unlock()
		if forwarded == 3 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no connection forwarded after one ended: %d", forwarded)
}

// UDP clients past limits.udp_flows get no flow into the guest until one
// ends; the relay's own flows carry on.
func TestIngressUDPFlowsBounded(t *testing.T) {
	p, _ := testPublisher(ingressRules{limit: 256, minPort: 1}, nil)
	p.maxUDPFlows = 2
	var mu sync.Mutex
	var inside []net.Conn
	p.dialGuestUDP = func(uint16) (net.Conn, error) {
		a, b := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, b) }() // the guest reads
		mu.Lock()
		inside = append(inside, b)
		mu.Unlock()
		return a, nil
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &udpRelay{p: p, port: 53, conn: pc, flows: map[string]net.Conn{}}
	defer r.Close()
	go r.serve(ctx)
	for i := 0; i < 5; i++ {
		c, err := net.Dial("udp", pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for j := 0; j < 3; j++ {
			if _, err := c.Write([]byte("question")); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	n := len(inside)
	mu.Unlock()
	if n != 2 || p.udpFlows.Load() != 2 {
		t.Fatalf("%d flows into the guest (%d counted) for 5 clients, limit 2", n, p.udpFlows.Load())
	}
	r.Close()
	deadline := time.Now().Add(5 * time.Second)
	for p.udpFlows.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if p.udpFlows.Load() != 0 {
		t.Fatalf("%d flows still counted after the relay closed", p.udpFlows.Load())
	}
}
