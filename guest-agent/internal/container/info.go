package container

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
)

// ProcessInfo is one process of a container.
type ProcessInfo struct {
	Pid     int
	Command string
}

// live returns a container that exists and is not being deleted.
func (m *Manager) live(cid string) (*Container, error) {
	c, err := m.get(cid)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	deleted := c.deleted
	c.mu.Unlock()
	if deleted {
		return nil, fmt.Errorf("container %q: %w", cid, errdefs.ErrNotFound)
	}
	return c, nil
}

// ListProcesses lists every process in the container's cgroup (and the
// cgroups below it), by guest PID.
func (m *Manager) ListProcesses(ctx context.Context, cid string) ([]ProcessInfo, error) {
	c, err := m.live(cid)
	if err != nil {
		return nil, err
	}
	pids, err := cgroupPidsRecursive(c.cgroup)
	if err != nil {
		return nil, fmt.Errorf("list processes of container %q: %w", cid, err)
	}
	out := make([]ProcessInfo, 0, len(pids))
	for _, pid := range pids {
		out = append(out, ProcessInfo{Pid: pid, Command: commandLine(pid)})
	}
	return out, nil
}

// cgroupPidsRecursive lists the processes of a cgroup and its children,
// sorted.
func cgroupPidsRecursive(root string) ([]int, error) {
	var pids []int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path != root && errors.Is(err, fs.ErrNotExist) {
				return nil // a child cgroup went away
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		p, err := cgroupPids(path)
		if err != nil && !(path != root && errors.Is(err, fs.ErrNotExist)) {
			return err
		}
		pids = append(pids, p...)
		return nil
	})
	sort.Ints(pids)
	return pids, err
}

// commandLine is a process's command line for display ([comm] when it has
// none, e.g. a zombie).
func commandLine(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err == nil {
		if s := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")); s != "" {
			return s
		}
	}
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); err == nil {
		return "[" + strings.TrimSpace(string(b)) + "]"
	}
	return ""
}

// Stats returns the container's cgroup v2 statistics, proto-marshaled as
// io.containerd.cgroups.v2.Metrics.
func (m *Manager) Stats(ctx context.Context, cid string) ([]byte, error) {
	c, err := m.live(cid)
	if err != nil {
		return nil, err
	}
	mgr, err := cgroup2.Load("/"+filepath.Base(c.cgroup), cgroup2.WithMountpoint(filepath.Dir(c.cgroup)))
	if err != nil {
		return nil, err
	}
	st, err := mgr.Stat()
	if err != nil {
		return nil, fmt.Errorf("read cgroup statistics of container %q: %w", cid, err)
	}
	return proto.Marshal(st)
}

// Update applies new resources (OCI LinuxResources JSON) to the container's
// cgroup.
func (m *Manager) Update(ctx context.Context, cid string, resourcesJSON []byte) error {
	c, err := m.live(cid)
	if err != nil {
		return err
	}
	res, err := m.parseResources(resourcesJSON)
	if err != nil {
		return fmt.Errorf("container %q: %v: %w", cid, err, errdefs.ErrInvalidArgument)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deleted {
		return fmt.Errorf("container %q: %w", cid, errdefs.ErrNotFound)
	}
	return applyResources(c.cgroup, res)
}

// WaitOOM returns the id of the next container with an OOM kill; events
// are queued while nobody waits. It ends with ctx (the event stays queued).
func (m *Manager) WaitOOM(ctx context.Context) (string, error) {
	m.oom.start()
	return m.oom.Wait(ctx)
}
