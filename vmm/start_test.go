package vmm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeVM is a VM that runs nothing.
type fakeVM struct{ done chan struct{} }

func (v *fakeVM) Pid() int                                  { return 4242 }
func (v *fakeVM) Pause(context.Context) error               { return nil }
func (v *fakeVM) Resume(context.Context) error              { return nil }
func (v *fakeVM) Stop(context.Context, time.Duration) error { return nil }
func (v *fakeVM) Kill(context.Context) error                { return nil }
func (v *fakeVM) Done() <-chan struct{}                     { return v.done }
func (v *fakeVM) ExitError() error                          { return nil }
func (v *fakeVM) Release() error                            { return nil }

// The fake VM can be saved: its state is a line of text.
func (v *fakeVM) WaitChannelOpen(context.Context) error { return nil }
func (v *fakeVM) SaveState(_ context.Context, path string) error {
	return os.WriteFile(path, []byte("state"), 0o600)
}

// startingBackend records the configurations it starts and fails those
// that resume a state when failResume is set.
type startingBackend struct {
	fakeBackend
	started    *[]Config
	failResume bool
}

func (b startingBackend) Start(_ context.Context, cfg Config) (VM, error) {
	*b.started = append(*b.started, cfg)
	if cfg.Incoming != "" && b.failResume {
		return nil, errors.New("load VM state: bad state")
	}
	return &fakeVM{done: make(chan struct{})}, nil
}

// snapshotFixture makes the files a snapshot key is made from and a
// virtiofsd that can save, and returns a request for them.
func snapshotFixture(t *testing.T) (Request, *[]Config, *[]string) {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"vmlinuz", "initrd", "qemu"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script := filepath.Join(dir, "virtiofsd")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'virtiofsd 1.13.2'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	fsd, err := LookupVirtiofsd(context.Background(), script)
	if err != nil {
		t.Fatal(err)
	}
	var started []Config
	var phases []string
	req := Request{
		Backend:   startingBackend{fakeBackend: fakeBackend{binary: filepath.Join(dir, "qemu")}, started: &started},
		Virtiofsd: fsd,
		Config: Config{ID: "c1", StateDir: dir, Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd"),
			MemoryMiB: 512, CPUs: 1, Accelerator: AccelTCG, Machine: MachineMicrovm, KernelArgs: []string{"gondolin.debug=1"},
			ConsoleSocket: filepath.Join(dir, "console.sock")},
		Snapshot: &SnapshotBoot{Dir: filepath.Join(dir, "snapshots"), KernelArgs: []string{"gondolin.snapshot=1"}},
		Hooks:    Hooks{Phase: func(name string) { phases = append(phases, name) }},
	}
	return req, &started, &phases
}

// saveState puts a saved state for req's VM into the snapshot directory,
// as a build would have.
func saveState(t *testing.T, req Request) string {
	t.Helper()
	cfg := req.Config
	cfg.KernelArgs = append(append([]string{}, cfg.KernelArgs...), req.Snapshot.KernelArgs...)
	key, _, err := snapshotKey(req.Backend, req.Virtiofsd, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(req.Snapshot.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(req.Snapshot.Dir, key+".state")
	if err := os.WriteFile(state, []byte("state"), 0o600); err != nil {
		t.Fatal(err)
	}
	return state
}

// A VM with a saved state of its shape resumes from it, with the
// snapshot's kernel arguments and its own console.
func TestStartResumes(t *testing.T) {
	req, started, phases := snapshotFixture(t)
	state := saveState(t, req)
	inst, err := Start(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !inst.Restored || len(*started) != 1 {
		t.Fatalf("restored %v after %d starts", inst.Restored, len(*started))
	}
	cfg := (*started)[0]
	if cfg.Incoming != state || !slices.Equal(cfg.KernelArgs, []string{"gondolin.debug=1", "gondolin.snapshot=1"}) || cfg.ConsoleSocket != req.Config.ConsoleSocket {
		t.Errorf("started %+v", cfg)
	}
	if !slices.Equal(*phases, []string{"snapshot", "fs_start", "vmm_start"}) {
		t.Errorf("phases %v", *phases)
	}
}

// A state that fails to load is set aside (KEY.error, no KEY.state) and
// the VM boots instead.
func TestStartBootsWhenResumeFails(t *testing.T) {
	req, started, _ := snapshotFixture(t)
	b := req.Backend.(startingBackend)
	b.failResume = true
	req.Backend = b
	state := saveState(t, req)
	inst, err := Start(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Restored || len(*started) != 2 || (*started)[1].Incoming != "" {
		t.Fatalf("restored %v after starts %+v", inst.Restored, *started)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the state that failed to load is still there: %v", err)
	}
	base := strings.TrimSuffix(state, ".state")
	if msg, err := os.ReadFile(base + ".error"); err != nil || !strings.Contains(string(msg), "bad state") {
		t.Errorf("KEY.error: %q, %v", msg, err)
	}
}

// Without a snapshot the VM boots with the configuration it was given.
func TestStartBoots(t *testing.T) {
	req, started, phases := snapshotFixture(t)
	req.Snapshot = nil
	inst, err := Start(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if inst.Restored || len(*started) != 1 || (*started)[0].Incoming != "" || !slices.Equal((*started)[0].KernelArgs, req.Config.KernelArgs) {
		t.Fatalf("restored %v after starts %+v", inst.Restored, *started)
	}
	if !slices.Equal(*phases, []string{"fs_start", "vmm_start"}) {
		t.Errorf("phases %v", *phases)
	}
}

// A VMM that cannot save makes a VM whose snapshot is not required boot.
func TestStartUnsupported(t *testing.T) {
	req, started, _ := snapshotFixture(t)
	b := req.Backend.(startingBackend)
	b.canSave = errors.New("QEMU 7.2")
	req.Backend = b
	for _, required := range []bool{false, true} {
		req.Snapshot.Required = required
		inst, err := Start(context.Background(), req)
		if err != nil || inst.Restored {
			t.Errorf("required=%v: %v, %+v", required, err, inst)
		}
	}
	if len(*started) != 2 {
		t.Errorf("%d starts", len(*started))
	}
}

// With no saved state yet, a VM of the shape is booted and saved first:
// with its own console log, outside the container's cgroup (no Started
// hook); the container's VM then resumes from it.
func TestStartBuildsSnapshot(t *testing.T) {
	req, started, _ := snapshotFixture(t)
	hooked := 0
	req.Config.Started = func(int) error { hooked++; return nil }
	inst, err := Start(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !inst.Restored || len(*started) != 2 {
		t.Fatalf("restored %v after starts %+v", inst.Restored, *started)
	}
	build, run := (*started)[0], (*started)[1]
	if build.ConsoleSocket != "" || build.Started != nil || build.Incoming != "" || !strings.HasPrefix(build.ID, "snapshot-") {
		t.Errorf("the VM saved: %+v", build)
	}
	if run.ConsoleSocket != req.Config.ConsoleSocket || run.Started == nil || run.Incoming == "" || run.ID != "c1" {
		t.Errorf("the VM resumed: %+v", run)
	}
	if m, _ := filepath.Glob(filepath.Join(req.Snapshot.Dir, "*.state")); len(m) != 1 || m[0] != run.Incoming {
		t.Errorf("states %v, resumed %s", m, run.Incoming)
	}
}
