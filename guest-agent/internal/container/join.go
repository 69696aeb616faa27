package container

import (
	"fmt"
	"slices"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// Namespaces a container init may join (join_namespaces).
var joinableNamespaces = []struct {
	name string
	flag int
}{
	{"pid", unix.CLONE_NEWPID},
	{"uts", unix.CLONE_NEWUTS},
	{"ipc", unix.CLONE_NEWIPC},
}

// allJoinable names every joinable namespace: what an exec process joins.
var allJoinable = []string{"pid", "uts", "ipc"}

// parseJoin checks join_container_id and join_namespaces and returns the
// namespaces in the order they are joined ("pid", "uts", "ipc").
func parseJoin(req *api.CreateContainerRequest) (string, []string, error) {
	jid, names := req.GetJoinContainerId(), req.GetJoinNamespaces()
	accepted := "accepted are ipc, uts and pid, each at most once"
	switch {
	case jid == "" && len(names) == 0:
		return "", nil, nil
	case jid == "":
		return "", nil, fmt.Errorf("join_namespaces %q need join_container_id, the container whose namespaces to join", names)
	case len(names) == 0:
		return "", nil, fmt.Errorf("join_container_id %q names no namespace to join: set join_namespaces (%s)", jid, accepted)
	case jid == req.GetContainerId():
		return "", nil, fmt.Errorf("join_container_id %q is the container itself", jid)
	}
	if err := ValidID(jid); err != nil {
		return "", nil, fmt.Errorf("join_container_id: %v", err)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if !slices.Contains(allJoinable, n) {
			return "", nil, fmt.Errorf("join_namespaces: unknown namespace %q: %s", n, accepted)
		}
		if seen[n] {
			return "", nil, fmt.Errorf("join_namespaces: %q given twice: %s", n, accepted)
		}
		seen[n] = true
	}
	var ordered []string
	for _, ns := range joinableNamespaces {
		if seen[ns.name] {
			ordered = append(ordered, ns.name)
		}
	}
	return jid, ordered, nil
}

// openJoin opens the namespaces names of the init of container jid, for
// the init of container id to start in. The files keep the namespaces
// alive until closed, but a PID namespace whose init has exited takes no
// new process.
func (m *Manager) openJoin(id, jid string, names []string) ([]nsFile, error) {
	t, err := m.get(jid)
	if err != nil {
		return nil, fmt.Errorf("container %q: join_container_id: %w", id, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.deleted {
		return nil, fmt.Errorf("container %q: join_container_id: container %q: %w", id, jid, errdefs.ErrNotFound)
	}
	init, ok := t.procs[""]
	if !ok || init.Pid == 0 {
		return nil, fmt.Errorf("container %q cannot join the namespaces of %q: it has no init process: %w", id, jid, errdefs.ErrFailedPrecondition)
	}
	stopped := fmt.Errorf("container %q cannot join the namespaces of %q: it is not running (its init process has exited): %w", id, jid, errdefs.ErrFailedPrecondition)
	if init.hasExited() {
		return nil, stopped
	}
	ns, err := openNamespaces(init.Pid, names)
	if err != nil {
		return nil, fmt.Errorf("container %q: join the namespaces of %q: %w", id, jid, err)
	}
	// Checked again with the namespaces open: the pid was still the init.
	if init.hasExited() {
		closeNamespaces(ns)
		return nil, stopped
	}
	return ns, nil
}

// checkJoinedHostname: a container in a joined UTS namespace sets no
// hostname; it may only repeat the namespace's own.
func checkJoinedHostname(ns []nsFile, jid, hostname string) error {
	if hostname == "" {
		return nil
	}
	i := slices.IndexFunc(ns, func(n nsFile) bool { return n.name == "uts" })
	if i < 0 {
		return nil
	}
	var current string
	_, err := runInNamespaces(ns[i:i+1], func() (int, error) {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return 0, err
		}
		current = unix.ByteSliceToString(u.Nodename[:])
		return 0, nil
	})
	if err != nil {
		return fmt.Errorf("read the hostname of the UTS namespace of %q: %w", jid, err)
	}
	if hostname != current {
		return fmt.Errorf("hostname %q: the container joins the UTS namespace of %q, whose hostname is %q: send no hostname or that one: %w", hostname, jid, current, errdefs.ErrInvalidArgument)
	}
	return nil
}
