package boot

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// rootBindDir is where the root is bound for the moment it takes to move
// the bind onto "/".
const rootBindDir = "/.gondolin-root"

// MakeRootPivotable puts a bind mount of the initial root over "/" and
// makes it this process's root (so that of every process it starts).
//
// The guest's root is the initramfs, which is the initial rootfs mount:
// it has no parent, and pivot_root(2) refuses (EINVAL) to move a root
// without one. Every container init pivot_roots into its container's root
// in a mount namespace of its own and detaches the agent's tree from it
// (see initproc), which a chroot cannot do (a chroot is left with
// chroot(subdir) and ".."). A bind of the rootfs moved over "/" is a mount
// with a parent; the files are the same (nothing is copied), so it costs a
// few system calls at boot. runc (#4434), bubblewrap (#592) and mkosi do
// the same per call; switch_root's copy to a tmpfs would cost the copy.
//
// It runs first, before anything is mounted, with the steps of
// switch_root: bind, chdir into the bind, move it onto "/", chroot(".").
// The process is still single-purpose here but not single-threaded (the
// Go runtime's threads): chroot and chdir act on the fs attributes all its
// threads share.
func MakeRootPivotable() error {
	if err := os.Mkdir(rootBindDir, 0o700); err != nil {
		return fmt.Errorf("make the root a mount point: %w", err)
	}
	if err := makeRootPivotable(); err != nil {
		_ = unix.Unmount(rootBindDir, unix.MNT_DETACH)
		_ = os.Remove(rootBindDir)
		return fmt.Errorf("make the root a mount point: %w", err)
	}
	// Now a plain directory of the same file system, in the new root.
	if err := os.Remove(rootBindDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("make the root a mount point: %w", err)
	}
	return nil
}

func makeRootPivotable() error {
	if err := unix.Mount("/", rootBindDir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind / on %s: %w", rootBindDir, err)
	}
	if err := unix.Chdir(rootBindDir); err != nil {
		return fmt.Errorf("chdir %s: %w", rootBindDir, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s onto /: %w", rootBindDir, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot into the bind: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	return nil
}
