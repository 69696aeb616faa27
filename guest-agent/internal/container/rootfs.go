package container

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/mountutil"
)

// What a pod's containers share in one guest
//
// A Kubernetes pod runs as one VM: its containers' roots are directories
// of one virtio-fs share (rootfs_path), each container's init joins the
// IPC, UTS and (when the pod shares it) PID namespaces of the pause
// container's (join_container_id, join_namespaces), and /dev/shm is one
// tmpfs of the guest bound into each (api.PodShmMountType). Each container
// keeps a mount namespace of its own (and a cgroup namespace, when it
// mounts cgroup) and its own cgroup.

// validRootfsPath checks rootfs_path: a clean relative path naming a
// directory below the share's top (resolved there by mountRootfs, which
// refuses symlinks leading out).
func validRootfsPath(p string) error {
	bad := func(why string) error {
		return fmt.Errorf("rootfs_path %q %s: accepted is a clean relative path inside the rootfs_tag share, like \"c1/rootfs\" (no leading \"/\", no \".\" or \"..\" elements, no empty elements or trailing \"/\")", p, why)
	}
	switch {
	case p == "":
		return bad("is empty")
	case len(p) > 4096:
		return bad("is too long")
	case strings.ContainsRune(p, 0):
		return bad("contains a NUL byte")
	case strings.HasPrefix(p, "/"):
		return bad("is absolute")
	case p == ".":
		return bad("names the whole share (leave rootfs_path empty for that)")
	case filepath.Clean(p) != p:
		return bad("is not clean")
	case slices.Contains(strings.Split(p, "/"), ".."):
		return bad("has a \"..\" element")
	}
	return nil
}

// mountRootfs mounts the container's root at c.rootfs with flags: the
// whole share rootfs_tag names, or with rootfs_path a directory of that
// share, bound from the share, which c then holds like its other shares
// (so that its binds may take their sources there too).
func (m *Manager) mountRootfs(c *Container, req *api.CreateContainerRequest, flags uintptr) error {
	tag, rel := req.GetRootfsTag(), req.GetRootfsPath()
	if rel == "" {
		if err := unix.Mount(tag, c.rootfs, "virtiofs", flags, ""); err != nil {
			return fmt.Errorf("mount virtio-fs share %q on %s: %w", tag, c.rootfs, err)
		}
		return nil
	}
	if err := m.acquireShare(tag, false); err != nil {
		return err
	}
	c.shares = append(c.shares, tag)
	src, err := mountutil.OpenBeneath(filepath.Join(m.cfg.SharesDir, tag), rel)
	if errors.Is(err, mountutil.ErrOutside) {
		return fmt.Errorf("rootfs_path %q in share %q: %w: %w", rel, tag, err, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return fmt.Errorf("rootfs_path %q in share %q: %w", rel, tag, err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return fmt.Errorf("rootfs_path %q in share %q: %w", rel, tag, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("rootfs_path %q in share %q is not a directory: %w", rel, tag, errdefs.ErrInvalidArgument)
	}
	// Recursive, so that what the host mounted below the root (and the
	// guest has met) comes along; nodev reaches those mounts too.
	if err := bindMount(mountutil.FdPath(src), c.rootfs, mountutil.Options{Flags: unix.MS_BIND | unix.MS_REC | flags}); err != nil {
		return fmt.Errorf("bind rootfs_path %q of share %q on %s: %w", rel, tag, c.rootfs, err)
	}
	return nil
}

// requestTags are the tags of the shares a container of req holds: its
// shares, and with rootfs_path its rootfs_tag.
func requestTags(req *api.CreateContainerRequest) []string {
	var tags []string
	for _, sh := range req.GetShares() {
		tags = append(tags, sh.GetTag())
	}
	if req.GetRootfsPath() != "" {
		tags = append(tags, req.GetRootfsTag())
	}
	return tags
}

// bindShare splits the source of a bind mount into the share it is in and
// its path there ("." for the share's top). Binds take their sources from
// the container's shares only: never from the rest of the guest (the
// agent's files, other containers' state, /proc, devices).
func bindShare(src, sharesDir string, tags []string) (tag, rel string, err error) {
	bad := func(why string) error {
		return fmt.Errorf("bind source %q %s: accepted are clean absolute paths below %s/<tag> for a share the request holds (its shares, or rootfs_tag with rootfs_path; here %q)", src, why, sharesDir, tags)
	}
	if !filepath.IsAbs(src) || filepath.Clean(src) != src {
		return "", "", bad("is not a clean absolute path")
	}
	rest, ok := strings.CutPrefix(src, sharesDir+"/")
	if !ok {
		return "", "", bad("is outside " + sharesDir)
	}
	tag, rel, _ = strings.Cut(rest, "/")
	if !slices.Contains(tags, tag) {
		return "", "", bad(fmt.Sprintf("is in share %q, which the request does not hold", tag))
	}
	if rel == "" {
		rel = "."
	}
	return tag, rel, nil
}

// bindFromShare binds the bind source src (checked by bindShare) onto
// target, resolved inside its share: a symlink leading out of the share is
// refused.
func bindFromShare(src, target string, opts mountutil.Options, ms mountSources) error {
	tag, rel, err := bindShare(src, ms.sharesDir, ms.tags)
	if err != nil {
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	f, err := mountutil.OpenBeneath(filepath.Join(ms.sharesDir, tag), rel)
	if errors.Is(err, mountutil.ErrOutside) {
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	return bindMount(mountutil.FdPath(f), target, opts)
}
