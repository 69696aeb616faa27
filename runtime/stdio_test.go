package runtime

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A process with a terminal has no stderr: a stderr FIFO its client names
// but never creates (containerd's cio with a terminal, nerdctl -t) is not
// opened, as runc's shim does not; without a terminal it is required.
func TestOpenHostIOTerminalIgnoresStderr(t *testing.T) {
	dir := t.TempDir()
	stdout := filepath.Join(dir, "stdout")
	if err := syscall.Mkfifo(stdout, 0o600); err != nil {
		t.Fatal(err)
	}
	// containerd's end, opened before create.
	r, err := os.OpenFile(stdout, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	missing := filepath.Join(dir, "stderr-never-made")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h, err := openHostIO(ctx, "c1", "ns", Stdio{Stdout: stdout, Stderr: missing, Terminal: true})
	if err != nil {
		t.Fatalf("with a terminal: %v", err)
	}
	if h.stdout == nil || h.stderr != nil {
		t.Errorf("with a terminal: stdout %v, stderr %v; want stdout only", h.stdout, h.stderr)
	}
	h.Close()
	if _, err := openHostIO(ctx, "c1", "ns", Stdio{Stdout: stdout, Stderr: missing}); err == nil {
		t.Error("without a terminal, a missing stderr FIFO was accepted")
	}
}
