package container

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseOOMKills(t *testing.T) {
	n, ok := ParseOOMKills(strings.NewReader("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n"))
	if !ok || n != 2 {
		t.Fatalf("ParseOOMKills = %d, %v", n, ok)
	}
	if _, ok := ParseOOMKills(strings.NewReader("low 0\n")); ok {
		t.Fatal("missing oom_kill accepted")
	}
	for _, c := range []struct{ prev, now, want uint64 }{{0, 0, 0}, {0, 1, 1}, {1, 3, 2}, {5, 5, 0}, {5, 2, 2}} {
		if got := NewKills(c.prev, c.now); got != c.want {
			t.Errorf("NewKills(%d, %d) = %d, want %d", c.prev, c.now, got, c.want)
		}
	}
}

func writeEvents(t *testing.T, dir string, kills int) {
	t.Helper()
	s := "low 0\nhigh 0\nmax 0\noom 0\noom_kill " + strconv.Itoa(kills) + "\n"
	// Rewrite in place (like the kernel's file): inotify sees IN_MODIFY.
	f, err := os.OpenFile(filepath.Join(dir, "memory.events"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(s)
	f.Close()
}

func TestOOMWatcher(t *testing.T) {
	w := newOOMWatcher()
	w.PollInterval = time.Hour // inotify only
	a, b := t.TempDir(), t.TempDir()
	writeEvents(t, a, 4) // kills before the container was watched do not count
	writeEvents(t, b, 0)
	w.add("a", a)
	w.add("b", b)

	// Nobody waits: events are queued, one per kill, in order.
	writeEvents(t, b, 1)
	time.Sleep(50 * time.Millisecond)
	writeEvents(t, a, 6)
	waitQueue(t, w, 3)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, want := range []string{"b", "a", "a"} {
		id, err := w.Wait(ctx)
		if err != nil || id != want {
			t.Fatalf("Wait = %q, %v; want %q", id, err, want)
		}
	}

	// A cancelled wait returns, and takes nothing.
	cctx, ccancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := w.Wait(cctx)
	ccancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait after deadline: %v", err)
	}

	// A waiter is woken by a new kill.
	got := make(chan string, 1)
	go func() { id, _ := w.Wait(ctx); got <- id }()
	time.Sleep(20 * time.Millisecond)
	writeEvents(t, a, 7)
	select {
	case id := <-got:
		if id != "a" {
			t.Fatalf("woken with %q", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter not woken")
	}

	// remove takes a last look: a kill not yet seen is still reported.
	w.PollInterval = time.Hour
	w.mu.Lock()
	w.unwatchLocked(w.entries["b"]) // as if the notification were late
	w.mu.Unlock()
	writeEvents(t, b, 2)
	w.remove("b")
	if id, err := w.Wait(ctx); err != nil || id != "b" {
		t.Fatalf("after remove: %q, %v", id, err)
	}
	writeEvents(t, b, 3)
	time.Sleep(50 * time.Millisecond)
	w.mu.Lock()
	n := len(w.queue)
	w.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d events from a removed container", n)
	}
}

// Without inotify notifications the poll finds the kills.
func TestOOMWatcherPoll(t *testing.T) {
	w := newOOMWatcher()
	w.PollInterval = 20 * time.Millisecond
	d := t.TempDir()
	writeEvents(t, d, 0)
	w.add("p", d)
	w.mu.Lock()
	w.unwatchLocked(w.entries["p"])
	w.mu.Unlock()
	writeEvents(t, d, 2)
	waitQueue(t, w, 2)
}

func waitQueue(t *testing.T, w *oomWatcher, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.mu.Lock()
		got := len(w.queue)
		w.mu.Unlock()
		if got == n {
			return
		}
		if got > n || time.Now().After(deadline) {
			t.Fatalf("%d events queued, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
