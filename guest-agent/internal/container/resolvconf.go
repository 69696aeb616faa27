package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/mountutil"
)

const resolvConfPath = "/etc/resolv.conf"

// setupResolvConf shows content at /etc/resolv.conf unless content is
// empty or a mount of the request provides the file (the spec wins). A
// symlink there (often absolute, like systemd's to
// /run/systemd/resolve/stub-resolv.conf, and dangling in an image) is
// followed inside the root; a missing file is created empty as the mount
// point, as runc creates mount points.
func setupResolvConf(rootfs, dir, content string, mounts []*api.Mount) error {
	if content == "" || hasMountAt(mounts, resolvConfPath) {
		return nil
	}
	target, err := mountutil.SecureJoin(rootfs, resolvConfPath)
	if err != nil {
		return fmt.Errorf("resolv.conf: resolve %s: %w", resolvConfPath, err)
	}
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := ensureMountPoint(target, false); err != nil {
			return fmt.Errorf("resolv.conf: create the mount point %s: %w", containerPath(rootfs, target), err)
		}
	case err != nil:
		return fmt.Errorf("resolv.conf: %w", err)
	case !fi.Mode().IsRegular():
		// Not opened to check: a FIFO would block the agent.
		return fmt.Errorf("resolv.conf: %s in the image is not a regular file (%s at %s)", resolvConfPath, fi.Mode().Type(), containerPath(rootfs, target))
	}
	src := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	if err := bindFileReadonly(src, target); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	return nil
}
