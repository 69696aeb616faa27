package vmm

import "context"

// Backend is one VMM (QEMU today): it starts the VMs of a Config and, if
// it can, saves and resumes them. A second VMM is a second Backend; the
// rest of vmm (file servers, snapshots, the start of a VM) and its callers
// stay the same.
type Backend interface {
	// Start launches a VM for cfg and returns once the VMM runs: the
	// guest boots in the background, or has resumed cfg.Incoming.
	Start(ctx context.Context, cfg Config) (VM, error)
	// Binary is the VMM's executable: a saved state depends on its
	// version, so it is part of the state's key.
	Binary() (string, error)
	// CanSaveState tells whether this VMM can save a VM with virtio-fs
	// devices and resume one from the saved state; the error says why
	// not. The VMs of a backend that can implement Saver.
	CanSaveState(ctx context.Context) error
	// Adopt takes over a VM another process started with
	// Config.Detached and handed over (a VM pool): its VMM is watched
	// and signalled through a's pidfd, its sockets are in a.StateDir.
	Adopt(a Adopted) (VM, error)
}

// Saver is a running VM whose state can be saved.
type Saver interface {
	// WaitChannelOpen returns once the guest has opened the agent
	// channel: the agent does that when it is ready and waits for its
	// host.
	WaitChannelOpen(ctx context.Context) error
	// SaveState stops the guest and writes its state to path; the VM
	// stays paused.
	SaveState(ctx context.Context, path string) error
}

// ChannelHandOff is a running VM whose agent channel can pass from one
// host connection to the next with nothing of the first left in the guest
// (a VM pool's: the pool talks to the agent before a shim takes the VM).
type ChannelHandOff interface {
	// HandOffChannel runs closeHost, which closes the host's connection
	// to the agent channel, and returns once the guest has closed its end
	// of the port and opened it again: the agent has ended the session
	// and waits for the next host.
	HandOffChannel(ctx context.Context, closeHost func() error) error
}
