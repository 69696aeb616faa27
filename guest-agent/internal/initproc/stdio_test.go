package initproc

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func socketpair(t *testing.T) (int, int) {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(sp[0]); unix.Close(sp[1]) })
	return sp[0], sp[1]
}

func TestStdioHandoff(t *testing.T) {
	for _, terminal := range []bool{false, true} {
		agent, child := socketpair(t)
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		// The same descriptor may be sent twice (stdin and stderr on
		// /dev/null): each arrives as its own.
		if err := SendStdio(agent, [3]int{int(devnull.Fd()), int(w.Fd()), int(devnull.Fd())}, terminal); err != nil {
			t.Fatal(err)
		}
		// What follows on the socket (the Config) is not consumed.
		if _, err := unix.Write(agent, []byte("cfg")); err != nil {
			t.Fatal(err)
		}
		w.Close()
		devnull.Close()
		stdio, gotTerminal, err := ReceiveStdio(child)
		if err != nil {
			t.Fatal(err)
		}
		if gotTerminal != terminal {
			t.Errorf("terminal = %v, want %v", gotTerminal, terminal)
		}
		if stdio[0] == stdio[2] {
			t.Errorf("stdin and stderr arrived as one descriptor %d", stdio[0])
		}
		for _, fd := range stdio {
			if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
				t.Errorf("received fd %d: flags %#x, %v; want close-on-exec until moved", fd, flags, err)
			}
		}
		// stdout is the pipe's write end.
		if _, err := unix.Write(stdio[1], []byte("out")); err != nil {
			t.Fatal(err)
		}
		for _, fd := range stdio {
			unix.Close(fd)
		}
		b := make([]byte, 8)
		if n, _ := r.Read(b); string(b[:n]) != "out" {
			t.Errorf("pipe read %q", b[:n])
		}
		r.Close()
		if n, _ := unix.Read(child, b); string(b[:n]) != "cfg" {
			t.Errorf("after the stdio the socket holds %q, want the config", b[:n])
		}
	}
}

func TestReceiveStdioRefuses(t *testing.T) {
	// No descriptors, or the agent gone: an error, never a half-set stdio.
	agent, child := socketpair(t)
	if _, err := unix.Write(agent, []byte{stdioPipes}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReceiveStdio(child); err == nil || !strings.Contains(err.Error(), "got 0 descriptors") {
		t.Errorf("no descriptors: err = %v", err)
	}
	if err := unix.Shutdown(agent, unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReceiveStdio(child); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("closed socket: err = %v", err)
	}
}
