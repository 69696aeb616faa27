package runtime

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// newStdinFIFO makes a FIFO, opens it as the shim does and returns it
// with a client writer.
func newStdinFIFO(t *testing.T) (*stdinFIFO, *os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stdin")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := openStdinFIFO(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return in, w
}

// After closeInput the copy delivers what the FIFO holds and ends, though
// the client's writer stays open (as ctr's does).
func TestStdinFIFODrainsOnCloseInput(t *testing.T) {
	in, w := newStdinFIFO(t)
	defer w.Close()

	var got bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- in.copyTo(&got) }()
	// More than one read's worth, still in the FIFO when CloseIO comes.
	data := bytes.Repeat([]byte("0123456789abcdef"), 3000)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	in.closeInput()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("copyTo: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the copy did not end after closeInput with the writer open")
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("copied %d bytes, want the %d written before closeInput", got.Len(), len(data))
	}
}

// Without closeInput the copy ends at the FIFO's EOF, after all data.
func TestStdinFIFOEOF(t *testing.T) {
	in, w := newStdinFIFO(t)
	var got bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- in.copyTo(&got) }()
	w.Write([]byte("hello"))
	w.Close()
	if err := <-done; err != nil || got.String() != "hello" {
		t.Fatalf("copyTo = %v, %q", err, got.String())
	}
}
