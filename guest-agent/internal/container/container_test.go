package container

import (
	"io"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/reaper"
)

const mountinfo = `22 1 0:20 / / rw shared:1 - rootfs rootfs rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw
40 22 0:30 / /run/gondolin/containers/c1/rootfs rw,relatime shared:10 - virtiofs rootfs rw
41 40 0:31 / /run/gondolin/containers/c1/rootfs/proc rw shared:11 - proc proc rw
42 40 0:32 / /run/gondolin/containers/c1/rootfs/dev rw shared:12 - tmpfs tmpfs rw,mode=755
43 42 0:33 / /run/gondolin/containers/c1/rootfs/dev/pts rw shared:13 - devpts devpts rw
44 22 0:34 / /run/gondolin/containers/c10/rootfs rw shared:14 - virtiofs rootfs2 rw
45 40 0:35 / /run/gondolin/containers/c1/rootfs/with\040space rw shared:15 - tmpfs tmpfs rw
`

func TestParseMountinfo(t *testing.T) {
	entries, err := ParseMountinfo(strings.NewReader(mountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 8 {
		t.Fatalf("%d entries", len(entries))
	}
	if e := entries[2]; e.Target != "/run/gondolin/containers/c1/rootfs" || e.FSType != "virtiofs" || e.Source != "rootfs" {
		t.Fatalf("entry 2 = %+v", e)
	}
	got := MountsUnder(entries, "/run/gondolin/containers/c1")
	want := []string{
		"/run/gondolin/containers/c1/rootfs/with space",
		"/run/gondolin/containers/c1/rootfs/dev/pts",
		"/run/gondolin/containers/c1/rootfs/dev",
		"/run/gondolin/containers/c1/rootfs/proc",
		"/run/gondolin/containers/c1/rootfs",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("MountsUnder = %q\nwant %q", got, want)
	}
}

func TestParsePids(t *testing.T) {
	if got := parsePids("12\n345\n\n"); !reflect.DeepEqual(got, []int{12, 345}) {
		t.Fatalf("parsePids = %v", got)
	}
	if got := parsePids(""); got != nil {
		t.Fatalf("parsePids(\"\") = %v", got)
	}
}

func TestValidID(t *testing.T) {
	for _, ok := range []string{"c1", "abc-DEF_1.2", strings.Repeat("a", 64)} {
		if err := ValidID(ok); err != nil {
			t.Errorf("ValidID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "../x", "a\x00b"} {
		if err := ValidID(bad); err == nil {
			t.Errorf("ValidID(%q) accepted", bad)
		}
	}
}

func testManager() *Manager {
	cfg := DefaultConfig()
	cfg.DrainGrace = 100 * time.Millisecond
	cfg.MaxDrain = 500 * time.Millisecond
	return NewManager(cfg, reaper.New(), nil)
}

// copyOut delivers everything written before the pipe closed, then EOF.
func TestCopyOutUntilEOF(t *testing.T) {
	m := testManager()
	p := newProcess("c", "")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	guest, host := net.Pipe()
	p.io.Add(1)
	go m.copyOut(p, guest, r)
	go func() {
		w.Write([]byte("hi\n"))
		w.Write([]byte("there\n"))
		w.Close()
		p.onExit(reaper.Exit{Pid: 1, Status: 7, At: time.Now()})
	}()
	b, err := io.ReadAll(host)
	if err != nil || string(b) != "hi\nthere\n" {
		t.Fatalf("read %q, %v", b, err)
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatal("process not done after its output closed")
	}
	if e := p.exitInfo(); e.Status != 7 {
		t.Fatalf("status %d", e.Status)
	}
}

// A background child holding the pipe after exit delays done only by the
// drain grace; a chatty one at most by MaxDrain.
func TestCopyOutGraceAfterExit(t *testing.T) {
	for _, chatty := range []bool{false, true} {
		m := testManager()
		p := newProcess("c", "")
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close() // the "background child" never closes it
		guest, host := net.Pipe()
		p.io.Add(1)
		go m.copyOut(p, guest, r)
		stop := make(chan struct{})
		defer close(stop)
		go io.Copy(io.Discard, host)
		w.Write([]byte("last words\n"))
		start := time.Now()
		p.onExit(reaper.Exit{Pid: 1, At: start})
		if chatty {
			go func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
						w.Write([]byte("."))
					}
				}
			}()
		}
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			t.Fatalf("chatty=%v: not done", chatty)
		}
		d := time.Since(start)
		lo, hi := 80*time.Millisecond, 400*time.Millisecond
		if chatty {
			lo, hi = 450*time.Millisecond, 900*time.Millisecond
		}
		if d < lo || d > hi {
			t.Errorf("chatty=%v: done after %s, want %s..%s", chatty, d, lo, hi)
		}
	}
}

// Several waiters all see the exit.
func TestManyWaiters(t *testing.T) {
	p := newProcess("c", "")
	got := make(chan uint32, 3)
	for range 3 {
		go func() { <-p.done; got <- p.exitInfo().Status }()
	}
	p.onExit(reaper.Exit{Pid: 5, Status: 137, At: time.Now()})
	for range 3 {
		select {
		case s := <-got:
			if s != 137 {
				t.Fatalf("status %d", s)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("waiter not released")
		}
	}
}
