//go:build integration

package integration

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The guest reports the ports it listens on and the root shim publishes
// them (runtime/ingress.go). These tests are a root container that listens
// on far more ports than the limit, and on privileged ports with host
// networking, and they check what the shim bound: at most
// limits.published_ports (256 by default), and no port below 1024 in the
// host's namespace.

const defaultPublishedPorts = 256

// listenScript is perl (the distro image has it) listening on TCP ports
// tcp and UDP ports udp on every address, then sleeping.
func listenScript(tcp, udp []int) string {
	list := func(ports []int) string {
		s := make([]string, len(ports))
		for i, p := range ports {
			s[i] = strconv.Itoa(p)
		}
		return strings.Join(s, ",")
	}
	return fmt.Sprintf(`use IO::Socket::INET; my @s;
for my $p (%s) { push @s, IO::Socket::INET->new(LocalPort => $p, Listen => 5, ReuseAddr => 1) or die "tcp $p: $!" }
for my $p (%s) { push @s, IO::Socket::INET->new(LocalPort => $p, Proto => "udp") or die "udp $p: $!" }
print "listening\n"; sleep 1000;`, list(tcp), list(udp))
}

func portRange(from, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = from + i
	}
	return out
}

// testNetNS creates a network namespace with a veth pair (both ends in it), an
// address and a default route, as Docker or CNI would configure one, and
// removes it when the test ends. Nothing in it is reachable from outside.
func testNetNS(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "gondolin-ti-" + hex.EncodeToString(b)
	steps := [][]string{
		{"netns", "add", name},
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"},
		{"-n", name, "link", "set", "eth1", "up"},
		{"-n", name, "addr", "add", "10.251.77.2/24", "dev", "eth0"},
		{"-n", name, "link", "set", "eth0", "up"},
		{"-n", name, "route", "add", "default", "via", "10.251.77.1"},
	}
	for i, s := range steps {
		if res := command(t, nil, "ip", s...); res.code != 0 {
			if i > 0 {
				command(t, nil, "ip", "netns", "del", name)
			}
			t.Fatalf("ip %v: %s", s, res)
		}
	}
	t.Cleanup(func() { command(t, nil, "ip", "netns", "del", name) })
	return "/var/run/netns/" + name
}

// listening returns the ports bound in a network namespace ("" for the
// test's own), TCP listeners and UDP sockets.
func listening(t *testing.T, nsPath string) (tcp, udp map[int]bool) {
	t.Helper()
	read := func(flag string) map[int]bool {
		args := []string{"ss", "-Hn", flag}
		name := args[0]
		if nsPath != "" {
			name, args = "nsenter", append([]string{"--net=" + nsPath}, args...)
		} else {
			args = args[1:]
		}
		res := command(t, nil, name, args...)
		if res.code != 0 {
			t.Fatalf("%s %v: %s", name, args, res)
		}
		ports := map[int]bool{}
		for _, line := range strings.Split(res.stdout, "\n") {
			f := strings.Fields(line)
			if len(f) < 4 {
				continue
			}
			local := f[3]
			if p, err := strconv.Atoi(local[strings.LastIndex(local, ":")+1:]); err == nil {
				ports[p] = true
			}
		}
		return ports
	}
	return read("-tl"), read("-ul")
}

// shimRSS returns the resident memory of the container's shim in KiB.
func shimRSS(t *testing.T, id string) int {
	shims := pidsOf("containerd-shim-gondolin-v1 -namespace " + namespace() + " -id " + id + " ")
	if len(shims) != 1 {
		t.Logf("want one shim for %s, found %v", id, shims)
		return 0
	}
	st, err := procStatusKiB(shims[0])
	if err != nil {
		return 0
	}
	return int(st["VmRSS"])
}

// A root container in a namespace of its own listens on 300 TCP and 50
// UDP ports: the shim publishes exactly the limit, no more, and keeps
// doing so.
func TestHostileIngressListenerFlood(t *testing.T) {
	ns := testNetNS(t)
	tcp, udp := portRange(20000, 300), portRange(21000, 50)
	id := startDetachedImage(t, distroImage(t), []string{"--with-ns", "network:" + ns}, "perl", "-e", listenScript(tcp, udp))
	waitStatus(t, id, "RUNNING", "the listener container did not start")

	published := func() (int, map[int]bool, map[int]bool) {
		tl, ul := listening(t, ns)
		n := 0
		for p := range tl {
			if p >= 20000 && p < 21000 {
				n++
			}
		}
		for p := range ul {
			if p >= 21000 && p < 22000 {
				n++
			}
		}
		return n, tl, ul
	}
	start := time.Now()
	deadline := start.Add(90 * time.Second)
	n := 0
	for n < defaultPublishedPorts && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		n, _, _ = published()
	}
	if n < defaultPublishedPorts {
		t.Fatalf("the shim published %d of the guest's ports after 90 s, want the limit, %d", n, defaultPublishedPorts)
	}
	t.Logf("%d ports published %s after start", n, time.Since(start).Round(time.Millisecond))
	_, tl0, ul0 := published()
	// Give the publisher time to go past the limit, or to churn, if it would.
	time.Sleep(3 * time.Second)
	n, tl, ul := published()
	if n != defaultPublishedPorts {
		t.Fatalf("the shim published %d ports, limit %d", n, defaultPublishedPorts)
	}
	// Which ones follows the guest's reports as they came: new ports are
	// taken lowest first, TCP first (planIngress, unit-tested), but a report
	// read while the guest is still binding may lack a port (the guest's
	// /proc/net listing is not atomic), and a published port stays while
	// the guest listens on it. So: the same set as 3 s before, no churn.
	if !maps.Equal(tl, tl0) || !maps.Equal(ul, ul0) {
		t.Errorf("the published ports changed while the guest's listeners did not: TCP %d → %d, UDP %d → %d", len(tl0), len(tl), len(ul0), len(ul))
	}
	rss := shimRSS(t, id)
	t.Logf("shim RSS with %d ports published: %d KiB", n, rss)
	if rss > 96<<10 {
		t.Errorf("shim RSS %d KiB with %d ports published, want under 96 MiB", rss, n)
	}
}

// freePort finds a port in candidates that nothing on the host listens on
// (TCP and UDP), so that the test can tell whether the shim bound it.
func freePort(t *testing.T, candidates []int) int {
	t.Helper()
	for _, p := range candidates {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		pc, err := net.ListenPacket("udp", fmt.Sprintf(":%d", p))
		if err != nil {
			continue
		}
		pc.Close()
		return p
	}
	t.Skipf("none of the ports %v is free on this host", candidates)
	return 0
}

// A root container with host networking (its namespace is the host's)
// listens on a privileged port and on a high one: the high one is
// published on the host, the privileged one is not, over TCP or UDP.
func TestHostileIngressHostNetworkPrivilegedPort(t *testing.T) {
	low := freePort(t, []int{80, 81, 88, 443, 444, 873, 1000, 1001, 1023})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	high := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	// Nothing of the test is left listening on the host once the container
	// is gone (cleanups run last first: this one after the removal).
	t.Cleanup(func() {
		if tl, ul := listening(t, ""); tl[low] || ul[low] || tl[high] {
			t.Errorf("a port of the test is still bound on the host after delete: TCP %d=%v, UDP %d=%v, TCP %d=%v", low, tl[low], low, ul[low], high, tl[high])
		}
	})
	id := startDetachedImage(t, distroImage(t), []string{"--net-host"}, "perl", "-e", listenScript([]int{low, high}, []int{low}))
	waitStatus(t, id, "RUNNING", "the listener container did not start")
	// The high port answers: the publisher works and has seen the list.
	deadline := time.Now().Add(90 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", high), time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest's port %d was not published on the host within 90 s: %v", high, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // one more round of the publisher
	tl, ul := listening(t, "")
	if tl[low] || ul[low] {
		t.Fatalf("the shim bound privileged port %d on the host (TCP %v, UDP %v)", low, tl[low], ul[low])
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", low), time.Second); err == nil {
		c.Close()
		t.Fatalf("privileged port %d answers on the host", low)
	}
}
