//go:build integration

package integration

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// Issue 14 finding 8: the host's own addresses are internal. A network
// namespace made by the test stands for a host whose outside address is an
// ordinary public one (93.184.215.7, on its loopback interface), with a
// service on it; the container's egress is dialled from that namespace.
// net.allow naming that address, without net.allow-internal, must not
// reach the service; with net.allow-internal it does (so the setup is
// sound).
func TestHostileHostAddressIsInternal(t *testing.T) {
	const hostIP = "93.184.215.7"
	name := "gondolin-" + newID(t)
	if len(name) > 60 {
		name = name[:60]
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
	// An interface with a private address and a default route (what the
	// guest mirrors), and the "outside" address on lo, which the guest
	// does not mirror.
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", hostIP + "/32", "dev", "lo"},
		{"link", "add", "v0", "type", "veth", "peer", "name", "v1"},
		{"addr", "add", "10.200.0.2/24", "dev", "v0"},
		{"link", "set", "v0", "up"},
		{"link", "set", "v1", "up"},
		{"route", "add", "default", "via", "10.200.0.1", "dev", "v0", "onlink"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	nsPath := filepath.Join("/var/run/netns", name)
	ln := listenIn(t, nsPath, hostIP+":0")
	svc := servePlain(t, ln, "host service")
	target := fmt.Sprintf("%s:%d", hostIP, svc.port)

	bin := buildFlood(t)
	try := func(annotations ...string) result {
		t.Helper()
		id := newID(t)
		args := []string{"run", "--rm", "--runtime", runtimeName, "--with-ns", "network:" + nsPath,
			"--mount", "type=bind,src=" + bin + ",dst=/flood,options=rbind:ro"}
		for _, a := range annotations {
			args = append(args, "--annotation", a)
		}
		args = append(args, testImage(t), id, "sh", "-c",
			"/flood/hostileflood get 1 http://"+target+"/probe 2>&1; echo rc=$?")
		res := ctr(t, nil, args...)
		t.Cleanup(func() { assertNoLeftovers(t, id) })
		return res
	}

	res := try("io.gondolin.net.allow=" + target)
	t.Logf("net.allow=%s: %s", target, res)
	if strings.Contains(svc.seen(), "/probe") || strings.Contains(res.stdout, "host service") {
		t.Fatalf("the container reached a service on the host's own address:\n%s\nservice saw:\n%s", res, svc.seen())
	}
	if !strings.Contains(res.stdout, "rc=") || strings.Contains(res.stdout, "rc=0") {
		t.Fatalf("the request should fail: %s", res)
	}

	res = try("io.gondolin.net.allow="+target, "io.gondolin.net.allow-internal="+hostIP)
	if !strings.Contains(res.stdout, "host service") || !strings.Contains(svc.seen(), "/probe") {
		t.Fatalf("with net.allow-internal the service should answer (the setup is broken otherwise): %s\nservice saw:\n%s", res, svc.seen())
	}
}

// listenIn opens a TCP listener inside the network namespace at nsPath.
func listenIn(t *testing.T, nsPath, addr string) net.Listener {
	t.Helper()
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// The thread is left locked: Go retires it with the goroutine, so
		// it never runs anything else in the wrong namespace.
		runtime.LockOSThread()
		ns, err := netns.GetFromPath(nsPath)
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			ch <- res{err: err}
			return
		}
		ln, err := net.Listen("tcp", addr)
		ch <- res{ln, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen in %s: %v", nsPath, r.err)
	}
	t.Cleanup(func() { r.ln.Close() })
	return r.ln
}
