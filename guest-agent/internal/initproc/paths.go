package initproc

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/mountutil"
)

// MaskAction is what masking one path takes.
type MaskAction int

const (
	// MaskSkip: the path does not exist (runc skips it too).
	MaskSkip MaskAction = iota
	// MaskTmpfs: a directory gets an empty read-only tmpfs over it.
	MaskTmpfs
	// MaskDevNull: anything else gets /dev/null bound over it.
	MaskDevNull
)

// MaskActionFor decides how to mask a path from its stat result.
func MaskActionFor(fi os.FileInfo, statErr error) (MaskAction, error) {
	switch {
	case errors.Is(statErr, os.ErrNotExist) || errors.Is(statErr, unix.ENOTDIR):
		return MaskSkip, nil
	case statErr != nil:
		return MaskSkip, statErr
	case fi.IsDir():
		return MaskTmpfs, nil
	default:
		return MaskDevNull, nil
	}
}

// maskPath hides a container path (resolved inside rootfs).
func maskPath(rootfs, p string) error {
	target, err := mountutil.SecureJoin(rootfs, p)
	if err != nil {
		return fmt.Errorf("masked path %s: %w", p, err)
	}
	fi, err := os.Stat(target)
	action, err := MaskActionFor(fi, err)
	if err != nil {
		return fmt.Errorf("masked path %s: %w", p, err)
	}
	switch action {
	case MaskTmpfs:
		err = unix.Mount("tmpfs", target, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0,mode=0755")
	case MaskDevNull:
		err = unix.Mount(containerNull(rootfs), target, "", unix.MS_BIND, "")
	}
	if err != nil {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	return nil
}

// containerNull is the /dev/null a masked file is bound to: the
// container's own node (the agent binds one onto its /dev/null), as runc
// masks after pivot_root, so that a chmod through a masked path changes no
// node of the guest's; the guest's when the container has none.
func containerNull(rootfs string) string {
	p, err := mountutil.SecureJoin(rootfs, "/dev/null")
	if err != nil {
		return "/dev/null"
	}
	var st unix.Stat_t
	if unix.Lstat(p, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
		return "/dev/null"
	}
	return p
}

// readonlyPath makes a container path read-only with a bind remount that
// keeps its nosuid/nodev/noexec flags. A missing path is skipped.
func readonlyPath(rootfs, p string) error {
	target, err := mountutil.SecureJoin(rootfs, p)
	if err != nil {
		return fmt.Errorf("read-only path %s: %w", p, err)
	}
	if err := unix.Mount(target, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return nil
		}
		return fmt.Errorf("bind read-only path %s: %w", p, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return fmt.Errorf("statfs read-only path %s: %w", p, err)
	}
	flags := uintptr(st.Flags) & (unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := unix.Mount(target, target, "", flags|unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("remount %s read-only: %w", p, err)
	}
	return nil
}

// SysctlPath maps a sysctl key (net.ipv4.ip_forward) to its file below
// procSys, refusing keys that would leave it.
func SysctlPath(procSys, key string) (string, error) {
	if key == "" || strings.ContainsAny(key, "\x00") {
		return "", fmt.Errorf("invalid sysctl key %q", key)
	}
	rel := strings.ReplaceAll(key, ".", "/")
	clean := path.Clean("/" + rel)
	if clean == "/" || clean != "/"+rel {
		return "", fmt.Errorf("invalid sysctl key %q", key)
	}
	return filepath.Join(procSys, clean), nil
}

// writeSysctls writes each sysctl (in key order) through the guest's
// /proc/sys: the files of namespaced sysctls (kernel.shm*, kernel.msg*,
// kernel.sem, fs.mqueue.*, kernel.hostname) act on the writer's
// namespaces, which are the container's here.
func writeSysctls(sysctl map[string]string) error {
	keys := make([]string, 0, len(sysctl))
	for k := range sysctl {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p, err := SysctlPath("/proc/sys", k)
		if err != nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return fmt.Errorf("sysctl %s: %w", k, err)
		}
		_, err = f.WriteString(sysctl[k])
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("sysctl %s=%q: %w", k, sysctl[k], err)
		}
	}
	return nil
}
