package vmm

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Stop does not wait for virtiofsd to notice the VMM is gone: it tells it
// to exit at once.
func TestFileServerStopIsPrompt(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "virtiofsd")
	// Creates its socket, then serves until SIGTERM, like virtiofsd whose
	// VMM left without it noticing.
	script := "#!/bin/sh\nfor a; do case $a in --socket-path=*) : > \"${a#--socket-path=}\";; esac; done\n" +
		"trap 'exit 0' TERM\nwhile :; do sleep 0.01; done\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "fs.sock")
	fs, err := StartFileServer(context.Background(), fake, dir, sock)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	fs.Stop()
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Errorf("Stop took %s", d)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}
