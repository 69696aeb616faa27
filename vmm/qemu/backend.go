package qemu

import (
	"context"
	"fmt"

	"github.com/earendil-works/gondolin-containerd/vmm"
)

// Backend is QEMU as a vmm.Backend.
type Backend struct {
	// QEMU is the runtime config's qemu_path: "" for DefaultBinary, a
	// name looked up in PATH, or a path.
	QEMU string
}

var (
	_ vmm.Backend = Backend{}
	_ vmm.Saver   = (*VM)(nil)
)

// Start launches QEMU for cfg (see the package function Start).
func (b Backend) Start(ctx context.Context, cfg vmm.Config) (vmm.VM, error) {
	vm, err := Start(ctx, b.QEMU, cfg)
	if err != nil {
		return nil, err
	}
	return vm, nil
}

// Adopt takes over a QEMU a VM pool started (see the package function
// Adopt).
func (b Backend) Adopt(a vmm.Adopted) (vmm.VM, error) {
	if a.Pidfd == nil || a.Pid <= 0 || a.StateDir == "" {
		return nil, fmt.Errorf("adopt a VM: pid %d, pidfd %v and state directory %q are all required", a.Pid, a.Pidfd != nil, a.StateDir)
	}
	return Adopt(a), nil
}

// Binary is the QEMU executable Start runs.
func (b Backend) Binary() (string, error) { return BinaryPath(b.QEMU) }

// CanSaveState tells whether this QEMU is 9.0 or later.
func (b Backend) CanSaveState(ctx context.Context) error { return CanSaveState(ctx, b.QEMU) }
