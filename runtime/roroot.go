package runtime

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A read-only root (spec.Root.Readonly: ctr run --read-only, docker run
// --read-only, readOnlyRootFilesystem) is read-only on the host, not only
// by the guest's word. The guest agent still has to create mount points
// and files to bind over before it makes the root read-only (as runc
// does), so the rootfs share is an overlay the shim owns:
//
//	<dir>           a small tmpfs (roRootTmpfsBytes), never exported
//	<dir>/upper     the overlay's upper layer: the agent's mount points
//	<dir>/work      the overlay's work directory
//	<dir>/root      overlay of the container's rootfs and upper: exported
//
// The container's rootfs is the overlay's lower layer, which an overlay
// never writes. Once the agent has created the container, sealReadonlyRoot
// makes the overlay's superblock read-only, which every copy of the mount
// (virtiofsd's own mount namespace included) shares, before any of the
// container's code has run. Removing it is one lazy unmount of <dir>.

// roRootTmpfsBytes bounds what the guest can write into the upper layer
// before the root is sealed: mount points and empty files only.
const roRootTmpfsBytes = 1 << 20

// roRootInodes bounds the upper layer's entries likewise.
const roRootInodes = 4096

// prepareReadonlyRoot builds the overlay over rootfs in dir (a new name in
// the state directory) and returns the directory to export.
func prepareReadonlyRoot(dir, rootfs string) (_ string, retErr error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("create read-only root directory: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = detachAndRemove(dir)
		}
	}()
	opts := fmt.Sprintf("mode=0700,size=%d,nr_inodes=%d", roRootTmpfsBytes, roRootInodes)
	if err := unix.Mount("gondolin-roroot", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return "", fmt.Errorf("mount tmpfs for the read-only root on %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return "", fmt.Errorf("make the read-only root's tmpfs private: %w", err)
	}
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return "", fmt.Errorf("create %s for the read-only root: %w", d, err)
		}
	}
	// The lower layer is given by descriptor: no option escaping of the
	// path, and the directory opened is the one mounted.
	lower, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open rootfs %s: %w", rootfs, err)
	}
	defer unix.Close(lower)
	root := filepath.Join(dir, "root")
	data := fmt.Sprintf("lowerdir=/proc/self/fd/%d,upperdir=%s,workdir=%s", lower, filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if err := unix.Mount("gondolin-roroot", root, "overlay", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		return "", fmt.Errorf("mount the read-only root's overlay over %s: %w", rootfs, err)
	}
	if err := unix.Mount("", root, "", unix.MS_PRIVATE, ""); err != nil {
		return "", fmt.Errorf("make the read-only root's overlay private: %w", err)
	}
	return root, nil
}

// sealReadonlyRoot makes the overlay at root read-only at the superblock.
// It fails (EBUSY) while anything holds a file of it open for writing.
func sealReadonlyRoot(root string) error {
	if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("make the container's root read-only on the host: %w", err)
	}
	return nil
}
