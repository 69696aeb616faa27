package vmm

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
	script := "#!/bin/sh\n[ \"$1\" = --version ] && { echo virtiofsd 1.13.2; exit 0; }\nfor a; do case $a in --socket-path=*) : > \"${a#--socket-path=}\";; esac; done\n" +
		"trap 'exit 0' TERM\nwhile :; do sleep 0.01; done\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "fs.sock")
	v, err := LookupVirtiofsd(context.Background(), fake)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := v.StartFileServer(context.Background(), dir, Share{Socket: sock})
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

func TestParseFlavour(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    virtiofsdFlavour
		ok      bool
	}{
		{"virtiofsd version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard\n", flavourC, true},
		{"virtiofsd 1.13.2\n", flavourRust, true},
		{"virtiofsd 1.5.0", flavourRust, true},
		{"", 0, false},
		{"qemu-system-x86_64 version 7.2.22\n", 0, false},
	} {
		got, err := parseFlavour(tc.version)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("parseFlavour(%q) = %v, %v; want %v (ok %v)", tc.version, got, err, tc.want, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "virtiofsd 1.x") {
			t.Errorf("error %q does not say what is accepted", err)
		}
	}
}

// Both flavours get the same settings, each in its own syntax.
func TestFileServerArgs(t *testing.T) {
	c := fileServerArgs(flavourC, "/r", Share{Socket: "/s.sock"}, 4096)
	for _, want := range [][]string{{"-o", "source=/r"}, {"-o", "cache=auto"}, {"-o", "sandbox=namespace"}, {"-o", "modcaps=-mknod"}, {"-o", "xattr"}, {"--rlimit-nofile=4096"}} {
		if !containsSeq(c, want) {
			t.Errorf("C args %q lack %q", c, want)
		}
	}
	r := fileServerArgs(flavourRust, "/r", Share{Socket: "/s.sock"}, 4096)
	for _, want := range []string{"--socket-path=/s.sock", "--shared-dir=/r", "--cache=auto", "--sandbox=namespace", "--seccomp=kill", "--modcaps=-mknod", "--xattr", "--rlimit-nofile=4096"} {
		if !slices.Contains(r, want) {
			t.Errorf("Rust args %q lack %q", r, want)
		}
	}
	if slices.Contains(r, "-o") {
		t.Errorf("Rust args %q carry C options", r)
	}
	if slices.Contains(r, "--announce-submounts") || slices.Contains(c, "announce_submounts") {
		t.Errorf("submounts announced for a share without them: %q, %q", c, r)
	}
	// A pod's share announces its submounts, in each syntax.
	c = fileServerArgs(flavourC, "/r", Share{Socket: "/s.sock", Submounts: true}, 4096)
	r = fileServerArgs(flavourRust, "/r", Share{Socket: "/s.sock", Submounts: true}, 4096)
	if !containsSeq(c, []string{"-o", "announce_submounts"}) || !slices.Contains(r, "--announce-submounts") {
		t.Errorf("submounts not announced: %q, %q", c, r)
	}
}

// With no virtiofsd_path the Rust virtiofsd is chosen over QEMU's C one,
// found on PATH too; a C one on PATH is passed over.
func TestLookupPrefersRust(t *testing.T) {
	dir := t.TempDir()
	write := func(name, version string) string {
		p := filepath.Join(dir, name, "virtiofsd")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\necho '"+version+"'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rust := write("rust", "virtiofsd 1.13.2")
	c := write("c", "virtiofsd version 7.2.22 (Debian)")
	v := lookupRustVirtiofsd(context.Background(), []string{filepath.Join(dir, "missing"), c, rust})
	if v == nil || v.Path != rust || v.CanSaveState() != nil {
		t.Fatalf("lookupRustVirtiofsd = %+v, want %s", v, rust)
	}
	if v := lookupRustVirtiofsd(context.Background(), []string{c}); v != nil {
		t.Errorf("a C virtiofsd was taken for the Rust one: %+v", v)
	}
	t.Setenv("PATH", filepath.Dir(rust))
	got, err := LookupVirtiofsd(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if got.Path != rust && !slices.Contains(rustVirtiofsdPaths, got.Path) {
		t.Errorf("LookupVirtiofsd chose %s, want the Rust one", got.Path)
	}
}

// Pids names the started process and the child a sandboxed virtiofsd
// serves from.
func TestFileServerPids(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "virtiofsd")
	// Like the Rust virtiofsd with sandbox=namespace: a child, which
	// creates the socket, and a parent waiting for it.
	script := "#!/bin/sh\n[ \"$1\" = --version ] && { echo virtiofsd 1.13.2; exit 0; }\n" +
		"for a; do case $a in --socket-path=*) s=${a#--socket-path=};; esac; done\n" +
		"trap 'trap - TERM; kill 0; exit 0' TERM\nsh -c \": > $s; while :; do sleep 0.01; done\" &\nwait\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	v, err := LookupVirtiofsd(context.Background(), fake)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := v.StartFileServer(context.Background(), dir, Share{Socket: filepath.Join(dir, "fs.sock")})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Stop()
	pids := fs.Pids()
	if len(pids) != 2 || pids[0] != fs.Pid() {
		t.Fatalf("Pids = %v, want %d and its child", pids, fs.Pid())
	}
}

func containsSeq(args, seq []string) bool {
	for i := 0; i+len(seq) <= len(args); i++ {
		if slices.Equal(args[i:i+len(seq)], seq) {
			return true
		}
	}
	return false
}
