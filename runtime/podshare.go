package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A CRI pod's VM has one virtio-fs share, api.PodTag, through which every
// container of the pod reaches the guest, the sandbox's and those created
// while the VM runs: a running microvm takes no new device, and one file
// server serves the whole pod. In the owner's state directory:
//
//	pod/mounts  a small tmpfs only the shim writes, a shared mount:
//	            mounts made below it propagate to its copies
//	pod/share   a bind of mounts, read-only and a slave of it: what the
//	            file server exports (and copies into its own namespace)
//
// Each container has mounts/<id>/rootfs, a bind of its root (the
// snapshot's mount, or the read-only root's overlay), and, with host
// binds, mounts/<id>/binds, a bind of its sealed binds share (binds.go).
// They propagate into the file server's view while it runs; removing them
// propagates likewise. The guest sees the share's top level read-only, so
// it cannot add, rename or remove an entry, and it reaches a container's
// files only as that container's own share would give them: a pod is one
// trust unit, its containers one VM.

// Names in the pod share's directory.
const (
	podShareName  = "pod"
	podMountsName = "mounts"
	podExportName = "share"
)

// podShareMountFlags keep the pod share's own tmpfs inert on the host.
const podShareMountFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// podShareInodes bounds the entries of the pod's tmpfs: three per
// container (its directory, rootfs, binds).
const podShareInodes = 3*1024 + 8

// preparePodShare makes the pod share in dir (a new name in the owner's
// state directory) and returns the directory to export. On error nothing
// of it is left mounted.
func preparePodShare(dir string) (_ string, retErr error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("create the pod share's directory: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = removePodShare(dir)
		}
	}()
	mounts, export := filepath.Join(dir, podMountsName), filepath.Join(dir, podExportName)
	for _, d := range []string{mounts, export} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", fmt.Errorf("create %s: %w", d, err)
		}
	}
	opts := fmt.Sprintf("mode=0755,size=1m,nr_inodes=%d", podShareInodes)
	if err := unix.Mount("gondolin-pod", mounts, "tmpfs", podShareMountFlags, opts); err != nil {
		return "", fmt.Errorf("mount the pod share's tmpfs on %s: %w", mounts, err)
	}
	// Private first, so that nothing outside is a peer of it; then shared,
	// a peer group of its own that share and the file server's copy
	// receive from.
	if err := unix.Mount("", mounts, "", unix.MS_PRIVATE, ""); err != nil {
		return "", fmt.Errorf("make the pod share private: %w", err)
	}
	if err := unix.Mount("", mounts, "", unix.MS_SHARED, ""); err != nil {
		return "", fmt.Errorf("make the pod share shared: %w", err)
	}
	if err := unix.Mount(mounts, export, "", unix.MS_BIND, ""); err != nil {
		return "", fmt.Errorf("bind the pod share to %s: %w", export, err)
	}
	if err := unix.Mount("", export, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|podShareMountFlags, ""); err != nil {
		return "", fmt.Errorf("make the exported pod share read-only: %w", err)
	}
	// A slave receives what is mounted in mounts and sends nothing back.
	if err := unix.Mount("", export, "", unix.MS_SLAVE, ""); err != nil {
		return "", fmt.Errorf("make the exported pod share a slave: %w", err)
	}
	return export, nil
}

// removePodShare detaches the pod share (every container's entry with it)
// and removes its directory, by descriptor.
func removePodShare(dir string) error {
	var errs []error
	for _, name := range []string{podExportName, podMountsName} {
		if err := detachPath(filepath.Join(dir, name)); err != nil {
			errs = append(errs, fmt.Errorf("detach the pod share's %s: %w", name, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return detachAndRemove(dir)
}

// podEntry is a container's directory in the pod share (on the host).
func podEntry(podShareDir, id string) string {
	return filepath.Join(podShareDir, podMountsName, id)
}

// publishInPod binds a container's root (and binds share, if any) into its
// entry in the pod share, from where they propagate into the file
// server's view.
func publishInPod(entry, rootfs, binds string) error {
	if err := os.Mkdir(entry, 0o755); err != nil {
		return fmt.Errorf("create the container's entry in the pod share: %w", err)
	}
	for _, m := range []struct{ name, source string }{{"rootfs", rootfs}, {"binds", binds}} {
		if m.source == "" {
			continue
		}
		target := filepath.Join(entry, m.name)
		if err := os.Mkdir(target, 0o755); err != nil {
			return fmt.Errorf("create %s in the pod share: %w", target, err)
		}
		// Recursive: the binds share's entries are mounts of their own.
		if err := unix.Mount(m.source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind the container's %s into the pod share: %w", m.name, err)
		}
	}
	return nil
}

// unpublishFromPod detaches a container's root and binds from the pod
// share and removes its entry, by descriptor. A pod share already gone
// (its owner's cleanup came first) is nothing to do.
func unpublishFromPod(entry string) error {
	if _, err := os.Lstat(entry); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for _, name := range []string{"rootfs", "binds"} {
		if err := detachPath(filepath.Join(entry, name)); err != nil {
			return fmt.Errorf("detach %s from the pod share: %w", name, err)
		}
	}
	return detachAndRemove(entry)
}
