package vmm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The snapshot key changes with what shapes the guest (size, kernel
// command line, devices, images) and not with what is the resumed VM's own
// (ID, sockets, console).
func TestSnapshotKey(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{}
	for _, f := range []string{"qemu", "virtiofsd", "vmlinuz", "initrd"} {
		p := filepath.Join(dir, f)
		if err := os.WriteFile(p, []byte(f), 0o755); err != nil {
			t.Fatal(err)
		}
		files[f] = p
	}
	b := fakeBackend{binary: files["qemu"]}
	fsd := &Virtiofsd{Path: files["virtiofsd"]}
	base := Config{
		ID: "a", StateDir: "/run/a", Kernel: files["vmlinuz"], Initrd: files["initrd"],
		MemoryMiB: 512, CPUs: 1, Accelerator: AccelTCG, Machine: MachineMicrovm,
		ConsoleLog: "/run/a/console.log", ChannelSocket: "/run/a/channel.sock", ChannelName: "io.gondolin.channel",
		Shares: []Share{{Tag: "rootfs", Socket: "/run/a/fs-rootfs.sock"}},
		NIC:    &NIC{Socket: "/run/a/net.sock", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, MTU: 65000},
	}
	key := func(c Config) string {
		t.Helper()
		k, _, err := snapshotKey(b, fsd, c)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	k0 := key(base)

	own := base
	own.ID, own.StateDir, own.ConsoleLog, own.ChannelSocket = "b", "/run/b", "/run/b/console.log", "/run/b/channel.sock"
	own.Shares = []Share{{Tag: "rootfs", Socket: "/run/b/fs-rootfs.sock"}}
	own.NIC = &NIC{Socket: "/run/b/net.sock", MAC: base.NIC.MAC, MTU: base.NIC.MTU}
	if key(own) != k0 {
		t.Error("the key depends on the VM's own ID, sockets or console")
	}

	for name, change := range map[string]func(*Config){
		"memory":      func(c *Config) { c.MemoryMiB = 1024 },
		"cpus":        func(c *Config) { c.CPUs = 2 },
		"kernel args": func(c *Config) { c.KernelArgs = []string{"gondolin.debug=1"} },
		"shares":      func(c *Config) { c.Shares = append(c.Shares, Share{Tag: "binds"}) },
		"no NIC":      func(c *Config) { c.NIC = nil },
		"machine":     func(c *Config) { c.Machine = MachineQ35 },
	} {
		c := base
		c.Shares = append([]Share(nil), base.Shares...)
		change(&c)
		if key(c) == k0 {
			t.Errorf("changing %s keeps the key", name)
		}
	}
	if err := os.WriteFile(files["vmlinuz"], []byte("another kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	if key(base) == k0 {
		t.Error("a rebuilt kernel keeps the key")
	}
}

// pruneSnapshots removes the saved states whose inputs changed or are gone,
// with their side files, and keeps the others.
func TestPruneSnapshots(t *testing.T) {
	dir := t.TempDir()
	snaps := filepath.Join(dir, "snapshots")
	if err := os.Mkdir(snaps, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(p, content string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kernel, qemuBin, gone := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "qemu"), filepath.Join(dir, "old-qemu")
	write(kernel, "kernel")
	write(qemuBin, "qemu")
	write(gone, "old qemu")
	save := func(key string, files ...string) {
		t.Helper()
		var inputs []fileStamp
		for _, f := range files {
			st, err := stampFile(f)
			if err != nil {
				t.Fatal(err)
			}
			inputs = append(inputs, st)
		}
		if err := writeInputs(filepath.Join(snaps, key+inputsExt), inputs); err != nil {
			t.Fatal(err)
		}
		write(filepath.Join(snaps, key+".state"), "state")
		write(filepath.Join(snaps, key+".lock"), "")
	}
	save("current", qemuBin, kernel)
	save("rebuilt", qemuBin, kernel)
	save("removed", gone, kernel)
	write(filepath.Join(snaps, "legacy.state"), "saved before inputs files existed")
	// The kernel is rebuilt: same path, other content and time.
	write(kernel, "another kernel")
	if err := os.Chtimes(kernel, time.Now().Add(time.Hour), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	save("current", qemuBin, kernel)
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(snaps, ".b123"), 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(snaps, ".b123"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(snaps, ".b456"), 0o700); err != nil {
		t.Fatal(err)
	}

	pruneSnapshots(context.Background(), snaps)

	ents, err := os.ReadDir(snaps)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	want := []string{".b456", "current.inputs", "current.lock", "current.state", "legacy.state"}
	if !slices.Equal(left, want) {
		t.Errorf("left after pruning: %v, want %v", left, want)
	}
}

// pruneLeastUsed keeps the most recently used states and removes the rest
// with the files beside them.
func TestPruneLeastUsed(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	for i := 0; i < 5; i++ {
		base := filepath.Join(dir, fmt.Sprintf("k%d", i))
		for _, ext := range []string{".state", ".lock", inputsExt} {
			if err := os.WriteFile(base+ext, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		// k0 was used last, k4 first.
		used := now.Add(-time.Duration(i) * time.Minute)
		if err := os.Chtimes(base+".state", used, used); err != nil {
			t.Fatal(err)
		}
	}
	pruneLeastUsed(context.Background(), dir, 2)
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	for i := range left {
		left[i] = filepath.Base(left[i])
	}
	want := []string{"k0.inputs", "k0.lock", "k0.state", "k1.inputs", "k1.lock", "k1.state"}
	if !slices.Equal(left, want) {
		t.Errorf("left: %v, want %v", left, want)
	}
}

// fakeBackend is a VMM that starts nothing: its binary is a file of the
// test's and its CanSaveState answers canSave, counting the questions.
type fakeBackend struct {
	binary  string
	canSave error
	asked   *int
}

func (f fakeBackend) Start(context.Context, Config) (VM, error) {
	return nil, errors.New("fakeBackend starts no VM")
}

func (f fakeBackend) Binary() (string, error) { return f.binary, nil }

func (f fakeBackend) Adopt(Adopted) (VM, error) {
	return nil, errors.New("fakeBackend adopts no VM")
}

func (f fakeBackend) CanSaveState(context.Context) error {
	if f.asked != nil {
		*f.asked++
	}
	return f.canSave
}

// A virtiofsd or VMM that cannot save a VM is found out before any VM is
// booted for it; for the VMM the finding is kept (KEY.unsupported), so
// later containers do not ask again.
func TestEnsureSnapshotUnsupported(t *testing.T) {
	dir := t.TempDir()
	script := func(name, out string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\necho '"+out+"'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, f := range []string{"vmlinuz", "initrd", "qemu"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd"), MemoryMiB: 512, CPUs: 1,
		Accelerator: AccelTCG, Machine: MachineMicrovm}
	ctx := context.Background()
	asked := 0
	b := fakeBackend{binary: filepath.Join(dir, "qemu"), canSave: errors.New("QEMU 7.2: saving a VM with virtio-fs needs QEMU 9.0 or later"), asked: &asked}
	snapshots := filepath.Join(dir, "snapshots")

	cfsd, err := LookupVirtiofsd(ctx, script("virtiofsd-c", "virtiofsd version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ensureSnapshot(ctx, snapshots, b, cfsd, cfg); !errors.Is(err, ErrSnapshotUnsupported) || !strings.Contains(err.Error(), "C virtiofsd") {
		t.Errorf("with the C virtiofsd: %v", err)
	}
	if _, err := os.Stat(snapshots); err == nil {
		t.Error("the snapshot directory was made for a virtiofsd that cannot save")
	}

	fsd, err := LookupVirtiofsd(ctx, script("virtiofsd", "virtiofsd 1.13.2"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := ensureSnapshot(ctx, snapshots, b, fsd, cfg); !errors.Is(err, ErrSnapshotUnsupported) || !strings.Contains(err.Error(), "QEMU 7.2: saving a VM with virtio-fs needs QEMU 9.0") {
			t.Errorf("call %d with QEMU 7.2: %v", i, err)
		}
	}
	// The second call must not ask the VMM again.
	if asked != 1 {
		t.Errorf("the VMM was asked %d times whether it can save", asked)
	}
	for _, pattern := range []string{"*.unsupported", "*" + inputsExt} {
		if m, _ := filepath.Glob(filepath.Join(snapshots, pattern)); len(m) != 1 {
			t.Errorf("%s in the snapshot directory: %v", pattern, m)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(snapshots, "*.state")); len(m) != 0 {
		t.Errorf("states: %v", m)
	}
}

// A failed attempt keeps VMs of its shape booting for snapshotRetryAfter,
// then the snapshot is tried again; a state found is marked used.
func TestSavedStateRetry(t *testing.T) {
	base := filepath.Join(t.TempDir(), "key")
	if found, err := savedState(base); found != "" || err != nil {
		t.Fatalf("nothing saved: %q, %v", found, err)
	}
	if err := os.WriteFile(base+".error", []byte("boot timed out"), 0o600); err != nil {
		t.Fatal(err)
	}
	if found, err := savedState(base); found != "" || err == nil || !strings.Contains(err.Error(), "boot timed out") {
		t.Errorf("after a failure: %q, %v", found, err)
	}
	past := time.Now().Add(-snapshotRetryAfter - time.Minute)
	if err := os.Chtimes(base+".error", past, past); err != nil {
		t.Fatal(err)
	}
	if found, err := savedState(base); found != "" || err != nil {
		t.Errorf("a failure older than snapshotRetryAfter must be retried: %q, %v", found, err)
	}
	if err := os.WriteFile(base+".state", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(base+".state", past, past); err != nil {
		t.Fatal(err)
	}
	if found, err := savedState(base); found != base+".state" || err != nil {
		t.Errorf("with a state: %q, %v", found, err)
	}
	if st, err := os.Stat(base + ".state"); err != nil || time.Since(st.ModTime()) > time.Minute {
		t.Errorf("the state found is not marked used: %v", err)
	}
}
