package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agentlog"
)

// Agent files are files the host asks to show in a container (its
// resolv.conf, a CA bundle with extra roots). The container's root is a
// virtio-fs share of its snapshot, so they are not written there: each is
// written to the container's directory below FilesDir, on the guest's own
// tmpfs, and bound read-only over the container's path. The binds are
// below the container's root, so they go with its other mounts.

// agentFileFlags make a shown file read-only and inert.
const agentFileFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// setupAgentFiles shows the request's resolv.conf and CA bundle in c and
// records the environment the bundle needs in c.env. It runs after the
// spec's mounts (a spec tmpfs on /run may be where a file goes) and before
// the root is made read-only (resolv.conf may need a mount point).
func setupAgentFiles(c *Container, req *api.CreateContainerRequest, certs []byte) error {
	if req.GetResolvConf() == "" && len(certs) == 0 {
		return nil
	}
	if err := os.MkdirAll(c.files, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", c.files, err)
	}
	if err := setupResolvConf(c.rootfs, c.files, req.GetResolvConf(), req.GetMounts()); err != nil {
		return err
	}
	if len(certs) == 0 {
		return nil
	}
	p, err := setupCABundle(c.rootfs, c.files, certs, req.GetMounts())
	if err != nil {
		return err
	}
	if p == "" {
		agentlog.Warnf("container %s: the image has no CA trust store (%s) and no usable spec tmpfs on %s: extra CA certificates not installed",
			c.ID, strings.Join(trustStorePaths, ", "), strings.Join(caFallbackDirs, " or "))
		return nil
	}
	c.env = caEnv(p)
	agentlog.Debugf("container %s: CA bundle with extra certificates at %s", c.ID, p)
	return nil
}

// hasMountAt reports whether a mount of the request has destination dest.
func hasMountAt(mounts []*api.Mount, dest string) bool {
	for _, m := range mounts {
		if path.Clean("/"+m.GetDestination()) == dest {
			return true
		}
	}
	return false
}

// bindFileReadonly binds the guest file src over target (which must
// exist) read-only. The remount is needed: a bind ignores MS_RDONLY.
func bindFileReadonly(src, target string) error {
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, target, err)
	}
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|agentFileFlags, ""); err != nil {
		return fmt.Errorf("remount %s read-only: %w", target, err)
	}
	return nil
}

// readRegular reads a regular file of at most max bytes. The image decides
// what is at p: never follow a last symlink (SecureJoin resolved them),
// never block on a FIFO or open a device.
func readRegular(p string, max int64) ([]byte, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", p, fi.Mode().Type())
	}
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", p, fi.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, max)
	}
	return b, nil
}

// containerPath is the path the container sees for target, a path below
// rootfs.
func containerPath(rootfs, target string) string {
	rel, err := filepath.Rel(rootfs, target)
	if err != nil || rel == "." {
		return "/"
	}
	return "/" + filepath.ToSlash(rel)
}

// isTmpfs reports whether p is on a tmpfs (not on the container's root).
func isTmpfs(p string) bool {
	var st unix.Statfs_t
	return unix.Statfs(p, &st) == nil && st.Type == unix.TMPFS_MAGIC
}

// removeAgentFiles removes what setupAgentFiles wrote; the binds are gone
// with the container's mounts, and nothing is ever mounted below dir.
func removeAgentFiles(dir string) error {
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}
