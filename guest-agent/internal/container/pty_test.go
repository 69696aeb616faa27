package container

import (
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/reaper"
)

func TestContainerPtmxWithoutDevpts(t *testing.T) {
	if got := containerPtmx(t.TempDir()); got != guestPtmx {
		t.Fatalf("containerPtmx = %q, want %q", got, guestPtmx)
	}
}

func testPty(t *testing.T) *pty {
	t.Helper()
	if _, err := os.Stat(guestPtmx); err != nil {
		t.Skip("no /dev/ptmx")
	}
	p, err := openPty(guestPtmx, uint32(os.Getuid()))
	if err != nil {
		t.Skipf("cannot allocate a pty here: %v", err)
	}
	t.Cleanup(func() { p.master.Close(); p.reader.Close(); p.slave.Close() })
	return p
}

func TestPtyResizeAndEcho(t *testing.T) {
	p := testPty(t)
	if err := setWinsize(p.master, 132, 43); err != nil {
		t.Fatal(err)
	}
	ws, err := unix.IoctlGetWinsize(int(p.slave.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col != 132 || ws.Row != 43 {
		t.Fatalf("slave winsize %+v, %v", ws, err)
	}
	if err := setWinsize(p.master, 1<<20, 1); err != nil {
		t.Fatal(err)
	}
	ws, _ = unix.IoctlGetWinsize(int(p.slave.Fd()), unix.TIOCGWINSZ)
	if ws.Col != 0xffff {
		t.Fatalf("width not clamped: %+v", ws)
	}
	// What the process writes comes out of the master (ONLCR: \r\n).
	if _, err := p.slave.Write([]byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	_ = p.reader.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	n, err := p.reader.Read(buf)
	if err != nil || string(buf[:n]) != "hi\r\n" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}

// The stdin stream's EOF leaves the terminal open (the user detached).
func TestCopyInTerminalEOFKeepsTerminal(t *testing.T) {
	pt := testPty(t)
	proc := newProcess("c", "e")
	guest, host := net.Pipe()
	done := make(chan struct{})
	go func() { copyInTerminal(proc, pt.master, guest); close(done) }()
	// raw mode so the bytes pass unchanged
	tio, err := unix.IoctlGetTermios(int(pt.slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Lflag &^= unix.ICANON | unix.ECHO
	if err := unix.IoctlSetTermios(int(pt.slave.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	host.Write([]byte("ab"))
	host.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("copy did not end at EOF")
	}
	buf := make([]byte, 4)
	n, err := pt.slave.Read(buf)
	if err != nil || string(buf[:n]) != "ab" {
		t.Fatalf("slave read %q, %v", buf[:n], err)
	}
	// still open: writing to the terminal works
	if _, err := pt.master.Write([]byte("c")); err != nil {
		t.Fatalf("terminal closed after stdin EOF: %v", err)
	}
	proc.onExit(reaper.Exit{Pid: 1, At: time.Now()})
}
