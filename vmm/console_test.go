package vmm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTailLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(p, []byte("one\r\ntwo\nthree\nfour\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := TailLines(p, 2); got != "three\nfour" {
		t.Fatalf("tail = %q", got)
	}
	if got := TailLines(filepath.Join(t.TempDir(), "none"), 2); !strings.Contains(got, "unreadable") {
		t.Fatalf("missing file: %q", got)
	}
}
