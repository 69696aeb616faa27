package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestConsoleWatch(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	old := strings.Repeat("boot noise\n", 1000)
	if err := os.WriteFile(p, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	w := newConsoleWatch(p, haltedMarker)
	defer w.close()
	if w.seen() {
		t.Fatal("marker seen in a console without it")
	}
	f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	defer f.Close()
	// The marker arrives split across two writes.
	f.WriteString("gondolin-agent: powering off\nreboot: System ")
	if w.seen() {
		t.Fatal("half a marker counted")
	}
	f.WriteString("halted\n")
	if !w.seen() {
		t.Fatal("marker split across reads not found")
	}
	// A marker written just before the watch started counts too.
	w2 := newConsoleWatch(p, haltedMarker)
	defer w2.close()
	if !w2.seen() {
		t.Error("recent marker before the watch began not found")
	}
	// A flood is skipped, not read in full.
	f.WriteString(strings.Repeat("x", 1<<20))
	if w.seen() {
		t.Error("marker found in a flood without one")
	}
	if missing := newConsoleWatch(filepath.Join(t.TempDir(), "none"), haltedMarker); missing.seen() {
		t.Error("missing file")
	}
}

// QEMU binds its monitor socket before it listens on it: a connect in
// between is refused, and monitor tries again until QEMU listens.
func TestMonitorWaitsForListen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qmp.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	go func() {
		time.Sleep(100 * time.Millisecond)
		if err := unix.Listen(fd, 1); err != nil {
			return
		}
		nfd, _, err := unix.Accept(fd)
		if err != nil {
			return
		}
		c := os.NewFile(uintptr(nfd), "conn")
		defer c.Close()
		c.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 10}, "package": ""}, "capabilities": []}}` + "\n"))
		buf := make([]byte, 4096)
		c.Read(buf)
		c.Write([]byte(`{"return": {}}` + "\n"))
		time.Sleep(200 * time.Millisecond)
	}()
	vm := &VM{qmpSocket: path, done: make(chan struct{}), stderr: &tailBuffer{}}
	if _, err := vm.monitor(); err != nil {
		t.Fatalf("monitor: %v", err)
	}
	vm.closeMonitor()
}
