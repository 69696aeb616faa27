package qemu

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A VM that resumes a saved state waits for it (-incoming defer) instead of
// booting; one that boots has no -incoming.
func TestArgsIncoming(t *testing.T) {
	cfg := testConfig()
	args, err := Args(cfg, "/q")
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(args, "-incoming") {
		t.Errorf("a booting VM has -incoming: %q", args)
	}
	cfg.Incoming = "/snap/k.state"
	args, _ = Args(cfg, "/q")
	if got := argAfter(args, "-incoming"); len(got) != 1 || got[0] != "defer" {
		t.Errorf("-incoming = %q, want defer (the state is loaded over QMP)", got)
	}
}

func TestMigrateCommand(t *testing.T) {
	b, err := json.Marshal(migrateCommand("migrate-incoming", "/var/lib/gondolin/snapshots/../snapshots/k.state"))
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	want := `{"execute":"migrate-incoming","arguments":{"uri":"file:/var/lib/gondolin/snapshots/k.state"}}`
	if got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// A QEMU unpacked outside /usr gets its own firmware directory; the
// system's QEMU, or one without a share/qemu beside it, gets none.
func TestFirmwareDir(t *testing.T) {
	root := t.TempDir()
	bin := filepath.Join(root, "usr", "bin", "qemu-system-x86_64")
	if got := firmwareDir(bin); got != "" {
		t.Errorf("no share/qemu: got %q", got)
	}
	share := filepath.Join(root, "usr", "share", "qemu")
	if err := os.MkdirAll(share, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := firmwareDir(bin); got != share {
		t.Errorf("got %q, want %q", got, share)
	}
	if got := firmwareDir("/usr/bin/qemu-system-x86_64"); got != "" {
		t.Errorf("system QEMU: got %q", got)
	}
}

func TestParseVersion(t *testing.T) {
	for out, want := range map[string][2]int{
		"QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)\nCopyright (c) 2003-2022 Fabrice Bellard": {7, 2},
		"QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1~bpo12+1)\n":                                        {10, 0},
		"QEMU emulator version 9.1.0\n": {9, 1},
	} {
		major, minor, err := parseVersion(out)
		if err != nil || major != want[0] || minor != want[1] {
			t.Errorf("parseVersion(%q) = %d.%d, %v; want %d.%d", out, major, minor, err, want[0], want[1])
		}
	}
	for _, out := range []string{"", "virtiofsd 1.13.2", "QEMU emulator version x.y"} {
		if _, _, err := parseVersion(out); err == nil {
			t.Errorf("parseVersion(%q) succeeded", out)
		}
	}
}

// CanSaveState reads QEMU's version: before 9.0 a VM with virtio-fs cannot
// be saved, and the error says which version was found.
func TestBackendCanSaveState(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "qemu")
	for _, c := range []struct {
		version string
		ok      bool
	}{
		{"QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)", false},
		{"QEMU emulator version 10.0.2", true},
	} {
		if err := os.WriteFile(bin, []byte("#!/bin/sh\necho '"+c.version+"'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		err := Backend{QEMU: bin}.CanSaveState(context.Background())
		if c.ok != (err == nil) {
			t.Errorf("%s: %v", c.version, err)
		}
		if !c.ok && (err == nil || !strings.Contains(err.Error(), "QEMU 7.2: saving a VM with virtio-fs needs QEMU 9.0")) {
			t.Errorf("%s: the error does not say why: %v", c.version, err)
		}
	}
}
