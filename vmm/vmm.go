// Package vmm runs virtual machines for sandboxes. It knows how to start a
// VM with a kernel, an initramfs, a channel to the guest agent and virtio-fs
// shares, and how to pause, resume and stop it; it knows nothing about
// containers.
//
// Start is the one way a VM comes up: it starts the VM's file servers and
// then the VM, resumed from a saved state of the VM's shape (the snapshot
// cache, snapshot.go) when it can be, booted otherwise. The VMM itself is a
// Backend: QEMU (package vmm/qemu) is the first, and package vmm/backend
// picks one by name, so that callers never import a backend.
package vmm

import (
	"context"
	"net"
	"time"
)

// Accelerator is how guest code is executed.
type Accelerator string

const (
	// AccelAuto picks KVM when the host can really use it, TCG otherwise.
	AccelAuto Accelerator = "auto"
	// AccelKVM is hardware virtualization through /dev/kvm.
	AccelKVM Accelerator = "kvm"
	// AccelTCG is QEMU's binary translation: slow, but works everywhere.
	AccelTCG Accelerator = "tcg"
)

// Share is a host directory exported to the guest over virtio-fs.
type Share struct {
	// Tag is the name the guest mounts it by (mount -t virtiofs TAG DIR).
	Tag string
	// Socket is the vhost-user socket of the file server serving it.
	Socket string
	// Submounts says the directory has file systems mounted below it,
	// some after the file server started, that the guest must see as
	// file systems of their own (each its own device and inode numbers),
	// as a pod's share does.
	Submounts bool
}

// Config describes one VM.
type Config struct {
	// ID names the VM in process lists and logs.
	ID string
	// StateDir holds the VM's sockets; it must exist and be short enough
	// for unix socket paths (108 bytes).
	StateDir string
	// Kernel and Initrd are booted directly (no firmware, no disk).
	Kernel string
	Initrd string
	// KernelArgs are appended to the backend's own kernel command line.
	KernelArgs []string
	MemoryMiB  uint64
	CPUs       uint32
	// Accelerator must be AccelKVM or AccelTCG here; resolve AccelAuto
	// with DetectAccelerator first.
	Accelerator Accelerator
	// Machine is the VM model; MachineAuto or "" picks it from the kernel
	// image (DetectMachine) when the VM starts.
	Machine Machine
	// ConsoleLog receives the guest's serial console: the VMM writes it
	// unless ConsoleSocket is set.
	ConsoleLog string
	// ConsoleSocket, when set, is a unix socket the VMM connects to and
	// sends the serial console to; whoever listens there writes
	// ConsoleLog (bounded: a guest can print without end).
	ConsoleSocket string
	// ChannelSocket is where the VMM listens for the host end of the agent
	// channel (a unix socket carrying the virtio-serial port's bytes).
	ChannelSocket string
	// ChannelName is the virtio-serial port name the agent looks for.
	ChannelName string
	Shares      []Share
	// NIC, when set, gives the guest a virtio-net interface whose frames
	// travel over a unix stream socket to a userspace network (the
	// runtime's egress policy). Nil means no NIC at all.
	NIC *NIC
	// Incoming, when set, is a VM state saved from a VM of the same
	// configuration (but for its sockets, console and ID): the VM resumes
	// from it instead of booting.
	Incoming string
	// Started, when set, is called with the VMM's PID as soon as the
	// process exists, before it loads the kernel or a saved state into
	// guest RAM (so that a cgroup it joins there is charged for that
	// memory); an error kills the VMM and fails the start.
	Started func(pid int) error
	// Detached starts the VMM so that it outlives the process that
	// started it (no parent-death signal): a VM pool starts VMs that a
	// shim takes over (Backend.Adopt).
	Detached bool
}

// NIC is a guest network interface backed by a unix stream socket. The
// listener must exist before the VM starts: the VMM connects to it.
type NIC struct {
	// Socket is the unix socket the VMM connects to; frames on it are
	// length-prefixed (QEMU's -netdev stream).
	Socket string
	MAC    net.HardwareAddr
	// MTU is offered to the guest driver; 0 leaves the driver's default.
	MTU int
}

// VM is a running virtual machine.
type VM interface {
	// Pid is the host process ID of the VMM.
	Pid() int
	// Pause stops the guest's vCPUs; Resume lets them run again.
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	// Stop ends the VM: gracefully within the grace period if the backend
	// can, then by force. It returns once the VMM process is gone.
	Stop(ctx context.Context, grace time.Duration) error
	// Kill ends the VMM process at once, without asking the guest or the
	// VMM, and returns once it is gone (or ctx is done): for a VM with
	// nothing left to lose, whose agent has synced and ended everything.
	Kill(ctx context.Context) error
	// Done is closed when the VMM process has exited.
	Done() <-chan struct{}
	// ExitError says how the VMM process ended, once Done is closed.
	ExitError() error
	// Release lets go of the VMM's control connection (QEMU's monitor
	// takes one client at a time), so that another process can take the
	// VM over (Backend.Adopt). The VM runs on; only Pid and Done may be
	// used after it.
	Release() error
}
