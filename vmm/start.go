package vmm

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/log"
)

// Request is one VM to start: its configuration, the host directories its
// shares export, and whether it may resume from a snapshot.
type Request struct {
	Backend   Backend
	Virtiofsd *Virtiofsd
	// Config is the VM; Config.Incoming is left empty (Start sets it
	// when the VM resumes).
	Config Config
	// Dirs are the host directories of Config.Shares, in their order: a
	// file server each, started before the VMM.
	Dirs []string
	// Snapshot, when set, resumes the VM from a saved state of its shape,
	// made first if there is none.
	Snapshot *SnapshotBoot
	Hooks    Hooks
}

// SnapshotBoot is where saved VM states are kept and how much a VM wants
// one.
type SnapshotBoot struct {
	// Dir holds the saved states, one per VM shape (snapshotKey).
	Dir string
	// Required (snapshot_boot = true) warns when the VMM or virtiofsd
	// cannot save a VM; otherwise ("auto") the VM then boots quietly.
	Required bool
	// KernelArgs are on the command line of the VMs saved and resumed,
	// and not of a VM booted instead.
	KernelArgs []string
}

// Hooks let the caller account for a VM's processes as they start. Each
// may be nil.
type Hooks struct {
	// FileServer is called with each file server as soon as it runs,
	// before the next one starts (to put it into a cgroup).
	FileServer func(*FileServer) error
	// FileServers is called with all of an attempt's file servers once
	// they run, before the VMM starts (to record their PIDs: a VM booted
	// after its snapshot failed to load has new ones).
	FileServers func([]*FileServer) error
	// Run runs start, the VMM's launch (from inside a network namespace,
	// say); nil runs it directly.
	Run func(start func() error) error
	// Phase is called as each step of the start ends, by name
	// ("snapshot", "fs_start", "vmm_start"), for the caller's timing.
	Phase func(name string)
}

func (h Hooks) phase(name string) {
	if h.Phase != nil {
		h.Phase(name)
	}
}

// Instance is a started VM and the file servers of its shares.
type Instance struct {
	VM          VM
	FileServers []*FileServer
	// Restored says the VM resumed from a snapshot instead of booting.
	Restored bool
}

// Start starts the VM of req: resumed from a snapshot when req.Snapshot
// allows it and one can be had, booted otherwise (and when the snapshot
// fails to load). On error nothing of it is left running.
func Start(ctx context.Context, req Request) (*Instance, error) {
	if len(req.Dirs) != len(req.Config.Shares) {
		return nil, fmt.Errorf("%d share directories for %d shares", len(req.Dirs), len(req.Config.Shares))
	}
	cfg := req.Config
	cfg.Incoming = ""
	if snap := req.Snapshot; snap != nil {
		// The machine is left as configured: the backend resolves "auto"
		// from the kernel, which is part of the snapshot's key, the same
		// way for the VM saved and the VMs resumed.
		snapCfg := cfg
		snapCfg.KernelArgs = append(append([]string{}, cfg.KernelArgs...), snap.KernelArgs...)
		state, err := ensureSnapshot(ctx, snap.Dir, req.Backend, req.Virtiofsd, snapCfg)
		switch {
		case err == nil:
			cfg = snapCfg
			cfg.Incoming = state
		case !snap.Required && errors.Is(err, ErrSnapshotUnsupported):
			log.G(ctx).WithError(err).Debug("snapshot_boot = auto: booting the VM")
		default:
			log.G(ctx).WithError(err).Warn("snapshot_boot: no VM snapshot to resume; booting the VM instead")
		}
		req.Hooks.phase("snapshot")
	}
	inst, err := launch(ctx, req, cfg)
	if err != nil && cfg.Incoming != "" {
		// A snapshot that cannot be loaded will not load next time
		// either: set it aside (its error file makes later starts boot
		// at once) and boot this VM.
		log.G(ctx).WithError(err).Warn("snapshot_boot: resuming the VM snapshot failed; booting the VM instead")
		discardSnapshot(cfg.Incoming, err)
		cfg.Incoming = ""
		inst, err = launch(ctx, req, cfg)
	}
	if err != nil {
		return nil, err
	}
	req.Hooks.phase("vmm_start")
	return inst, nil
}

// launch starts the file servers of cfg's shares and then the VMM (which
// resumes cfg.Incoming, if set). On error it stops what it started.
func launch(ctx context.Context, req Request, cfg Config) (_ *Instance, retErr error) {
	inst := &Instance{Restored: cfg.Incoming != ""}
	defer func() {
		if retErr != nil {
			for _, fs := range inst.FileServers {
				fs.Stop()
			}
		}
	}()
	for i, dir := range req.Dirs {
		fs, err := req.Virtiofsd.StartFileServer(ctx, dir, cfg.Shares[i])
		if err != nil {
			return nil, err
		}
		inst.FileServers = append(inst.FileServers, fs)
		if req.Hooks.FileServer != nil {
			if err := req.Hooks.FileServer(fs); err != nil {
				return nil, err
			}
		}
	}
	if req.Hooks.FileServers != nil {
		if err := req.Hooks.FileServers(inst.FileServers); err != nil {
			return nil, err
		}
	}
	req.Hooks.phase("fs_start")
	start := func() error {
		vm, err := req.Backend.Start(ctx, cfg)
		inst.VM = vm
		return err
	}
	run := req.Hooks.Run
	if run == nil {
		run = func(start func() error) error { return start() }
	}
	if err := run(start); err != nil {
		if inst.VM != nil {
			// Started, but run failed after it (leaving a namespace).
			_ = inst.VM.Stop(context.WithoutCancel(ctx), 0)
		}
		return nil, err
	}
	return inst, nil
}
