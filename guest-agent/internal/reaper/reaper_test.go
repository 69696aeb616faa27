package reaper

import (
	"os"
	"syscall"
	"testing"
	"time"
)

func TestExitStatus(t *testing.T) {
	cases := []struct {
		ws   syscall.WaitStatus
		want uint32
	}{
		{0, 0},
		{7 << 8, 7},
		{255 << 8, 255},
		{syscall.WaitStatus(syscall.SIGKILL), 137},
		{syscall.WaitStatus(syscall.SIGTERM), 143},
		{syscall.WaitStatus(syscall.SIGSEGV) | 0x80, 139}, // core dumped
	}
	for _, c := range cases {
		if got := ExitStatus(c.ws); got != c.want {
			t.Errorf("ExitStatus(%#x) = %d, want %d", uint32(c.ws), got, c.want)
		}
	}
}

func TestReaperDispatchesByPid(t *testing.T) {
	sh, err := lookSh()
	if err != nil {
		t.Skip(err)
	}
	r := New()
	stop := make(chan struct{})
	defer close(stop)
	go r.Run(stop)

	got := make(chan Exit, 2)
	start := func(script string) int {
		pid, err := r.Start(func() (int, error) {
			return syscall.ForkExec(sh, []string{"sh", "-c", script}, &syscall.ProcAttr{Env: []string{}})
		}, func(e Exit) { got <- e })
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	// Exits immediately, possibly before Start returns: must not be lost.
	p1 := start("exit 3")
	p2 := start("kill -9 $$")
	want := map[int]uint32{p1: 3, p2: 137}
	for range 2 {
		select {
		case e := <-got:
			if want[e.Pid] != e.Status {
				t.Errorf("pid %d: status %d, want %d", e.Pid, e.Status, want[e.Pid])
			}
			delete(want, e.Pid)
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out; still waiting for %v", want)
		}
	}
}

func TestHandover(t *testing.T) {
	sh, err := lookSh()
	if err != nil {
		t.Fatal(err)
	}
	r := New()
	stop := make(chan struct{})
	defer close(stop)
	go r.Run(stop)

	first := make(chan Exit, 1)
	second := make(chan Exit, 1)
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	// Waits for a line on stdin, so it outlives the handover.
	pid, err := r.Start(func() (int, error) {
		return syscall.ForkExec(sh, []string{"sh", "-c", "read x; exit 5"}, &syscall.ProcAttr{Env: []string{}, Files: []uintptr{r2.Fd(), 2, 2}})
	}, func(e Exit) { first <- e })
	if err != nil {
		t.Fatal(err)
	}
	if !r.Handover(pid, func(e Exit) { second <- e }) {
		t.Fatal("Handover of a running child = false")
	}
	w2.Write([]byte("go\n"))
	w2.Close()
	select {
	case e := <-second:
		if e.Pid != pid || e.Status != 5 {
			t.Fatalf("exit = %+v, want pid %d status 5", e, pid)
		}
	case e := <-first:
		t.Fatalf("the replaced callback got %+v", e)
	case <-time.After(10 * time.Second):
		t.Fatal("timed out")
	}
	// Reaped: nothing to hand over any more.
	if r.Handover(pid, func(Exit) {}) {
		t.Fatal("Handover of a reaped child = true")
	}
	if r.Handover(-1, func(Exit) {}) {
		t.Fatal("Handover of an unknown pid = true")
	}
}

func lookSh() (string, error) {
	for _, p := range []string{"/bin/sh", "/usr/bin/sh"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", os.ErrNotExist
}
