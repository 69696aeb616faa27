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
	// PodTag is a CRI pod's one share: a directory per container of the
	// pod, holding its root ("rootfs") and its binds share ("binds"),
	// which the request names with rootfs_path.
	PodTag = "pod"
	// SharesDir is where the agent mounts the shares in the guest.
	SharesDir = "/run/gondolin/shares"
)

// PodShmMountType is the Mount type that stands for the pod's /dev/shm: one
// tmpfs of the guest (nosuid, nodev, noexec, mode 1777) that every container
// given such a mount sees at its destination, so that a pod's containers
// share POSIX shared memory as they would share the sandbox's shm on a
// host. The agent mounts it at the first such mount; its options may carry
// "size=" (a tmpfs size: bytes, or with a k, m or g suffix, or a % of the
// guest's memory; 64m when none is given) besides ro/rw and per-mount
// flags. The first mount's size is the tmpfs's; a later one must repeat it
// or give none. Its source must be empty.
const PodShmMountType = "gondolin-pod-shm"
