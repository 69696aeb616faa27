package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agentlog"
)

// share is a virtio-fs share mounted at SharesDir/<tag>, held by the
// containers that named it.
type share struct {
	path     string
	readonly bool
	refs     int
}

func validTag(tag string) error {
	if tag == "" || tag == "." || tag == ".." || strings.ContainsAny(tag, "/\x00") || len(tag) > 255 {
		return fmt.Errorf("invalid share tag %q", tag)
	}
	return nil
}

// acquireShares mounts the shares c names (once per tag in the guest) and
// records them in c, so teardown releases exactly those.
func (m *Manager) acquireShares(c *Container, shares []*api.Share) error {
	for _, sh := range shares {
		tag := sh.GetTag()
		if err := m.acquireShare(tag, sh.GetReadonly()); err != nil {
			return err
		}
		c.shares = append(c.shares, tag)
	}
	return nil
}

func (m *Manager) acquireShare(tag string, readonly bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.shares[tag]; ok {
		if readonly && !s.readonly {
			agentlog.Warnf("share %q is already mounted read-write; a read-only use relies on its bind mounts being read-only", tag)
		}
		s.refs++
		return nil
	}
	path := filepath.Join(m.cfg.SharesDir, tag)
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("create share mount point %s: %w", path, err)
	}
	var flags uintptr
	if readonly {
		flags = unix.MS_RDONLY
	}
	if err := m.mountShare(tag, path, flags); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("mount virtio-fs share %q on %s: %w", tag, path, err)
	}
	m.shares[tag] = &share{path: path, readonly: readonly, refs: 1}
	return nil
}

// releaseShares drops c's hold on its shares, unmounting those nobody
// else holds. The container's own mounts are gone by then.
func (m *Manager) releaseShares(c *Container) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, tag := range c.shares {
		s, ok := m.shares[tag]
		if !ok {
			continue
		}
		if s.refs--; s.refs > 0 {
			continue
		}
		delete(m.shares, tag)
		err := unix.Unmount(s.path, 0)
		if errors.Is(err, unix.EBUSY) {
			err = unix.Unmount(s.path, unix.MNT_DETACH)
		}
		if err != nil && !errors.Is(err, unix.EINVAL) {
			agentlog.Warnf("unmount share %s: %v", s.path, err)
			continue
		}
		if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			agentlog.Warnf("remove share mount point: %v", err)
		}
	}
	c.shares = nil
}
