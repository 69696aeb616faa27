package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The shim runs as root and its shares are written by a hostile guest, so
// tearing mounts down never resolves a path the guest could have written:
// it starts from a directory the shim made (the state directory, the
// bundle), opens each recorded name below it by file descriptor without
// following symlinks, and unmounts through that descriptor. A symlink the
// guest planted is at most removed, never followed; a directory it planted
// is removed only if no mount is below it.

// maxStackedMounts bounds how many mounts detachAt peels off one name: the
// shim stacks at most a few (the snapshot's mounts, one tmpfs).
const maxStackedMounts = 16

// maxRemoveDepth bounds how deep removeBeneath descends into directories
// that a guest may have made.
const maxRemoveDepth = 64

// openBeneath opens name below dirfd as an O_PATH descriptor without
// following any symlink or leaving dirfd's tree. It does cross into a mount
// on name itself, unless noXdev.
func openBeneath(dirfd int, name string, flags uint64, noXdev bool) (int, error) {
	how := &unix.OpenHow{
		Flags:   flags | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	if noXdev {
		how.Resolve |= unix.RESOLVE_NO_XDEV
	}
	for {
		fd, err := unix.Openat2(dirfd, name, how)
		if !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN) {
			return fd, err
		}
	}
}

// isMountRoot tells whether fd is the root of a mount.
func isMountRoot(fd int) (bool, error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE, &stx); err != nil {
		return false, err
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return false, fmt.Errorf("the kernel does not report mount roots (statx STATX_ATTR_MOUNT_ROOT needs Linux 5.8)")
	}
	return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}

// unmountFd lazily detaches the mount whose root fd is, with everything
// mounted below it: the path goes through the descriptor's magic link,
// which names exactly that mount and is never looked up again.
func unmountFd(fd int) error {
	return unix.Unmount(fmt.Sprintf("/proc/self/fd/%d", fd), unix.MNT_DETACH)
}

// detachAt detaches every mount stacked on name below dirfd (each with its
// submounts). A missing name or a symlink there is not a mount: nothing to
// do.
func detachAt(dirfd int, name string) error {
	for i := 0; i < maxStackedMounts; i++ {
		fd, err := openBeneath(dirfd, name, unix.O_PATH, false)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("open %s: %w", name, err)
		}
		root, err := isMountRoot(fd)
		if err == nil && root {
			err = unmountFd(fd)
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("unmount %s: %w", name, err)
		}
		if !root {
			return nil
		}
	}
	return fmt.Errorf("%s: still mounted after %d unmounts", name, maxStackedMounts)
}

// removeBeneath removes name below dirfd and, if it is a directory,
// everything in it, by descriptor: it never follows a symlink and refuses
// to enter a mount (a live bind below would be host files).
func removeBeneath(dirfd int, name string, depth int) error {
	if depth > maxRemoveDepth {
		return fmt.Errorf("%s: directories nested deeper than %d; not removing them", name, maxRemoveDepth)
	}
	fd, err := openBeneath(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY, true)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
		// A symlink or another non-directory: unlinkat never follows.
		if err := unix.Unlinkat(dirfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove %s: %w", name, err)
		}
		return nil
	case errors.Is(err, unix.EXDEV):
		return fmt.Errorf("%s is still a mount point; not removing it", name)
	case err != nil:
		return fmt.Errorf("open %s: %w", name, err)
	}
	dir := os.NewFile(uintptr(fd), name)
	defer dir.Close()
	for {
		names, err := dir.Readdirnames(256)
		for _, n := range names {
			if err := removeBeneath(fd, n, depth+1); err != nil {
				return fmt.Errorf("%s/%w", name, err)
			}
		}
		if err != nil || len(names) == 0 {
			break
		}
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// openDir opens a directory the shim itself made (its state directory, a
// bundle) to act below it by descriptor.
func openDir(path string) (int, error) {
	return unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// detachPath detaches every mount on path, a name in a directory the shim
// made (its parent is resolved, the name itself never followed).
func detachPath(path string) error {
	return inParent(path, detachAt)
}

// detachAndRemove detaches every mount on path and then removes it and
// what is left in it, by descriptor.
func detachAndRemove(path string) error {
	return inParent(path, func(parent int, name string) error {
		if err := detachAt(parent, name); err != nil {
			return err
		}
		return removeBeneath(parent, name, 0)
	})
}

// inParent runs fn on path's name in its parent directory, opened by
// descriptor (a directory the shim made); a missing parent is nothing to do.
func inParent(path string, fn func(parent int, name string) error) error {
	dir := filepath.Dir(path)
	parent, err := openDir(dir)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(parent)
	if err := fn(parent, filepath.Base(path)); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	return nil
}
