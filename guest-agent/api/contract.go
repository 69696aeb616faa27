package api

// The host–guest contract beside the RPCs: the names both sides must agree
// on and that no message carries. The shim and the agent import them from
// here, so each is written once.

// ChannelPortName is the name of the virtio-serial port that carries the
// multiplexed (yamux) channel between shim and agent.
const ChannelPortName = "io.gondolin.channel"

// Share tags: the virtio-fs tags the shim exports a container's file
// systems under. The agent mounts share TAG at SharesDir/TAG.
const (
	// RootfsTag is the share of a container's root file system.
	RootfsTag = "rootfs"
	// BindsTag is the share that carries a container's host bind mounts,
	// one entry per bind (see the runtime's binds share).
	BindsTag = "binds"
	// SharesDir is where the agent mounts the shares in the guest.
	SharesDir = "/run/gondolin/shares"
)
