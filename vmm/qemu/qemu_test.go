package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
