package mountutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrOutside is the error of OpenBeneath for a path that leads out of its
// root (through ".." or a symlink).
var ErrOutside = errors.New("leads out of its share (through a symlink or \"..\")")

// OpenBeneath opens rel below the directory root as an O_PATH file,
// resolving it with openat2(RESOLVE_BENEATH): every symlink and ".." in it
// is followed only while it stays inside root, and one that would leave
// (an absolute symlink, too many "..") is ErrOutside. The caller mounts
// the file as /proc/self/fd/N, so nothing can swap the path between the
// check and the mount.
//
// A directory is opened with O_DIRECTORY: an O_PATH open does not trigger
// an automount at its last component, an O_DIRECTORY one does, so the file
// of a directory that is a virtio-fs submount (announce_submounts) is the
// submount's root, not the directory under it.
func OpenBeneath(root, rel string) (*os.File, error) {
	dirfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(dirfd)
	open := func(flags uint64) (int, error) {
		how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC | flags, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS}
		for range 16 {
			fd, err := unix.Openat2(dirfd, rel, &how)
			// EAGAIN: a rename anywhere raced with the ".." checks.
			if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
				return fd, err
			}
		}
		return -1, unix.EAGAIN
	}
	fd, err := open(unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOTDIR) {
		fd, err = open(0)
	}
	switch {
	case errors.Is(err, unix.EXDEV):
		return nil, fmt.Errorf("%s: %w", rel, ErrOutside)
	case err != nil:
		return nil, &os.PathError{Op: "open", Path: filepath.Join(root, rel), Err: err}
	}
	return os.NewFile(uintptr(fd), filepath.Join(root, rel)), nil
}

// FdPath names an open file for mount(2): the magic link
// /proc/self/fd/N, which mounts exactly the file that was opened.
func FdPath(f *os.File) string {
	return fmt.Sprintf("/proc/self/fd/%d", f.Fd())
}
