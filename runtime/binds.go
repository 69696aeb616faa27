package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/oci"
)

// The binds share is the directory exported as api.BindsTag: one entry per
// host bind mount of the container. The guest mounts it read-write (a
// read-write bind must be writable), so its root must give the guest
// nothing to work with:
//
//   - it is a small tmpfs of its own, holding only the mount points the
//     shim made, and is made read-only (the superblock, so every copy of
//     the mount, virtiofsd's own included) before any file server starts:
//     the guest cannot add, rename or remove an entry, and cannot spend
//     host memory there;
//   - each entry is a clone of the source's mount tree (open_tree), made
//     private and, for a read-only bind, read-only recursively
//     (mount_setattr AT_RECURSIVE), so no submount of the source stays
//     writable through it;
//   - removing it is one lazy unmount of that tmpfs, reached by descriptor
//     from the state directory, which detaches every bind with it; nothing
//     the guest wrote is ever looked up.

// bindsRootMode is the binds tmpfs root's mode: the guest only traverses it.
const bindsRootMode = 0o755

// bindsMountFlags keep the binds share's root inert on the host.
const bindsMountFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// prepareBinds makes dir the binds share with an entry per bind (named
// b.Name) carrying its source. On error nothing of it is left mounted.
func prepareBinds(dir string, binds []oci.HostBind) (retErr error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("create binds directory: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = removeBinds(dir)
		}
	}()
	// The size does not matter once it is read-only: mount points only.
	opts := fmt.Sprintf("mode=%o,size=64k,nr_inodes=%d", bindsRootMode, len(binds)+8)
	if err := unix.Mount("gondolin-binds", dir, "tmpfs", bindsMountFlags, opts); err != nil {
		return fmt.Errorf("mount the binds share's tmpfs on %s: %w", dir, err)
	}
	// Mount events inside it never propagate out to the host, nor in.
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make the binds share private: %w", err)
	}
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open binds share %s: %w", dir, err)
	}
	defer unix.Close(root)
	if ok, err := isMountRoot(root); err != nil || !ok {
		return fmt.Errorf("binds share %s is not the tmpfs just mounted (%v)", dir, err)
	}
	for _, b := range binds {
		if err := attachBind(root, b); err != nil {
			return err
		}
	}
	// Read-only from here on: the superblock, so every copy of this mount
	// (a file server's own mount namespace) refuses new entries too.
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY|bindsMountFlags, ""); err != nil {
		return fmt.Errorf("make the binds share's root read-only: %w", err)
	}
	return nil
}

// attachBind clones b.Source's mount tree and mounts it on a new entry
// b.Name in the binds share's root.
func attachBind(root int, b oci.HostBind) error {
	if b.Name == "" || b.Name == "." || b.Name == ".." || filepath.Base(b.Name) != b.Name {
		return fmt.Errorf("bind mount of %s: invalid entry name %q", b.Source, b.Name)
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, b.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("bind mount source %s: %w", b.Source, err)
	}
	defer unix.Close(tree)
	// Private, so host mount events below the source do not reach the
	// guest; read-only on every mount of the tree for a read-only bind.
	attr := &unix.MountAttr{Propagation: unix.MS_PRIVATE}
	if b.Readonly {
		attr.Attr_set = unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
		return fmt.Errorf("bind mount of %s: set its attributes: %w", b.Source, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(tree, &st); err != nil {
		return fmt.Errorf("bind mount source %s: %w", b.Source, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		err = unix.Mkdirat(root, b.Name, 0o755)
	} else {
		var fd int
		if fd, err = unix.Openat(root, b.Name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644); err == nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		return fmt.Errorf("bind mount target for %s: %w", b.Source, err)
	}
	if err := unix.MoveMount(tree, "", root, b.Name, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("bind mount %s: %w", b.Source, err)
	}
	return nil
}

// removeBinds detaches the binds share at dir (a name in the state
// directory) with every bind on it, and removes the directory. A share
// left by an older shim (entries bound straight into a directory the
// guest could write) has each entry detached by descriptor instead. It
// fails, leaving dir, if anything is still mounted there.
func removeBinds(dir string) error {
	parent, err := openDir(filepath.Dir(dir))
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", filepath.Dir(dir), err)
	}
	defer unix.Close(parent)
	name := filepath.Base(dir)
	if err := detachAt(parent, name); err != nil {
		return fmt.Errorf("unmount binds share %s: %w", dir, err)
	}
	if err := detachEntries(parent, name); err != nil {
		return fmt.Errorf("unmount binds in %s: %w", dir, err)
	}
	if err := removeBeneath(parent, name, 0); err != nil {
		return fmt.Errorf("remove binds share %s: %w", dir, err)
	}
	return nil
}

// detachEntries detaches the mounts on the entries of directory name below
// parent, the layout of the binds share before it had a tmpfs root.
func detachEntries(parent int, name string) error {
	fd, err := openBeneath(parent, name, unix.O_RDONLY|unix.O_DIRECTORY, true)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(fd), name)
	defer d.Close()
	var errs []error
	for {
		names, err := d.Readdirnames(256)
		for _, n := range names {
			if err := detachAt(fd, n); err != nil {
				errs = append(errs, err)
			}
		}
		if err != nil || len(names) == 0 {
			break
		}
	}
	return errors.Join(errs...)
}
