package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/mount"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/oci"
)

// prepareBinds bind-mounts each host source into dir, the directory the
// binds share exports. A read-only bind is made read-only here, on the
// host, because the guest is not trusted to keep its own mount read-only.
func prepareBinds(dir string, binds []oci.HostBind) (retErr error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create binds directory: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = removeBinds(dir)
		}
	}()
	for _, b := range binds {
		fi, err := os.Stat(b.Source)
		if err != nil {
			return fmt.Errorf("bind mount source %s: %w", b.Source, err)
		}
		target := filepath.Join(dir, b.Name)
		if fi.IsDir() {
			err = os.Mkdir(target, 0o700)
		} else {
			var f *os.File
			if f, err = os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err == nil {
				f.Close()
			}
		}
		if err != nil {
			return fmt.Errorf("bind mount target for %s: %w", b.Source, err)
		}
		if err := unix.Mount(b.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind mount %s: %w", b.Source, err)
		}
		// Keep host mount events from propagating into the share.
		if err := unix.Mount("", target, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("make bind of %s private: %w", b.Source, err)
		}
		if b.Readonly {
			if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("make bind of %s read-only: %w", b.Source, err)
			}
		}
	}
	return nil
}

// removeBinds unmounts everything under dir and removes it. It refuses to
// remove anything that is still mounted.
func removeBinds(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read binds directory: %w", err)
	}
	for _, e := range entries {
		target := filepath.Join(dir, e.Name())
		if err := mount.UnmountRecursive(target, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount bind %s: %w", target, err)
		}
		if mounted, err := mount.Lookup(target); err == nil && mounted.Mountpoint == target {
			return fmt.Errorf("bind %s is still mounted; not removing it", target)
		}
		// Remove only the (now empty) mountpoint itself, never recursively.
		if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove bind mountpoint %s: %w", target, err)
		}
	}
	return os.Remove(dir)
}
