package initproc

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// How a container is kept inside its root
//
// A chroot(2) alone is not a boundary: a process with CAP_SYS_CHROOT
// (Docker's default set) chroots into a subdirectory, walks ".." out of
// it (its cwd is now outside its root, so nothing stops the walk) and
// lands in whatever tree its root was carved from. So, as runc does, the
// container init gets a mount namespace of its own and pivot_root(2)s into
// the container root; the agent's whole mount tree (the guest's root with
// the agent binary, /run with the shares and every other container's
// root, /proc, /sys, /dev, /tmp, the cgroup hierarchy) is then detached
// from that namespace (umount2 MNT_DETACH of the old root), not merely
// hidden under it:
//
//   - ".." at the root of the container's mount stops there: the container
//     root is mounted on the root directory of the namespace's bottom mount
//     (the initial rootfs), and the kernel climbs from a mount's root only
//     to a mountpoint that is not itself the root of its parent (see
//     choose_mountpoint in fs/namei.c), so the escape ends where it
//     started;
//   - there is nothing else in the namespace to reach by any path, fd or
//     /proc/<pid>/root: the agent's tree is gone from it, the agent is not
//     in the container's PID namespace, the init is non-dumpable until it
//     execs (Main), and every fd but stdio is closed at exec;
//   - what lies under the container root is the initial rootfs alone (the
//     initramfs: the agent binary, kernel modules). Uncovering it takes
//     unmounting the container root, which takes CAP_SYS_ADMIN in the
//     guest's initial user namespace: a --privileged container. Such a
//     container can mount the virtio-fs tags and the guest's devices
//     anyway; the host must be, and is, safe from a guest owned outright.
//
// pivot_root refuses a process whose root is the initial rootfs (EINVAL:
// it has no parent mount to be moved under), and the guest's root is an
// initramfs. The agent therefore makes its own root a bind mount of the
// rootfs once at boot (boot.MakeRootPivotable; runc#4434, bubblewrap#592
// and mkosi use the same trick per call). There is no chroot fallback: if
// pivot_root fails the container does not start.

// unshareMountNS gives the calling thread a mount namespace of its own (and
// an fs_struct of its own: CLONE_NEWNS implies CLONE_FS, so chdir, chroot
// and pivot_root on this thread no longer move the rest of the process)
// with no mount in it shared: nothing the container does to its mounts
// propagates back into the agent's namespace, and pivot_root refuses
// shared mounts anyway. The caller must have locked its OS thread.
func unshareMountNS() error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make the mount namespace private: %w", err)
	}
	return nil
}

// enterRoot makes rootfs, a mount point, the root of the calling thread's
// mount namespace and detaches the old root with every mount below it,
// as runc's pivotRoot does. The cwd is left at the new root.
func enterRoot(rootfs string) error {
	oldroot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the old root: %w", err)
	}
	defer unix.Close(oldroot)
	newroot, err := unix.Open(rootfs, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the container root %s: %w", rootfs, err)
	}
	defer unix.Close(newroot)
	if err := unix.Fchdir(newroot); err != nil {
		return fmt.Errorf("chdir to the container root %s: %w", rootfs, err)
	}
	// pivot_root(".", ".") stacks the old root on top of the new one,
	// where it can be unmounted without a directory for it in the
	// container's root (which may be read-only).
	if err := unix.PivotRoot(".", "."); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("pivot_root into %s: %w (is the agent's root still the initramfs itself?)", rootfs, err)
		}
		return fmt.Errorf("pivot_root into %s: %w", rootfs, err)
	}
	if err := unix.Fchdir(oldroot); err != nil {
		return fmt.Errorf("chdir to the old root: %w", err)
	}
	// Private already (unshareMountNS); said again because an unmount
	// that propagated would take the agent's own mounts with it.
	if err := unix.Mount("", ".", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make the old root private: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	return nil
}

// joinMountNS moves the calling thread into the mount namespace at fd (the
// container init's): its root and cwd become that namespace's root, the
// container's. setns(CLONE_NEWNS) is refused while the thread shares its
// fs_struct (root, cwd, umask) with other threads, as every thread of a Go
// program does, so the thread takes one of its own first. The caller must
// have locked its OS thread.
func joinMountNS(fd int) error {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare fs attributes: %w", err)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("join the container's mount namespace: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	return nil
}
