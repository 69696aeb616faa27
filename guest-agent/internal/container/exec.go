package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agentlog"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/initproc"
)

// processConfig turns the API's process into the child's config (the
// per-process part: what an exec process has too).
func processConfig(proc *api.Process) (initproc.Config, error) {
	if proc == nil || len(proc.GetArgs()) == 0 {
		return initproc.Config{}, errors.New("process args must not be empty")
	}
	cfg := initproc.Config{
		Args:       proc.GetArgs(),
		Env:        proc.GetEnv(),
		Cwd:        proc.GetCwd(),
		NoNewPrivs: proc.GetNoNewPrivileges(),
	}
	if u := proc.GetUser(); u != nil {
		cfg.UID, cfg.GID, cfg.AdditionalGids = u.GetUid(), u.GetGid(), u.GetAdditionalGids()
		if u.GetHasUmask() {
			um := u.GetUmask()
			cfg.Umask = &um
		}
	}
	for _, r := range proc.GetRlimits() {
		cfg.Rlimits = append(cfg.Rlimits, initproc.Rlimit{Type: r.GetType(), Hard: r.GetHard(), Soft: r.GetSoft()})
	}
	if err := initproc.ValidateRlimits(cfg.Rlimits); err != nil {
		return initproc.Config{}, err
	}
	caps := proc.GetCapabilities()
	sets, unknown := initproc.ComputeCapSets(initproc.CapNames{
		Bounding:    caps.GetBounding(),
		Effective:   caps.GetEffective(),
		Permitted:   caps.GetPermitted(),
		Inheritable: caps.GetInheritable(),
		Ambient:     caps.GetAmbient(),
	})
	if len(unknown) > 0 {
		agentlog.Warnf("ignoring unknown capabilities %s", strings.Join(unknown, ", "))
	}
	cfg.Caps = sets
	return cfg, nil
}

// nsFile is an open namespace of a container init.
type nsFile struct {
	name string
	fd   int
	flag int
}

// openNamespaces opens the namespaces names (of joinableNamespaces, in
// that order) of the container init pid, for runInNamespaces: an exec
// process is started in all of them (allJoinable), the init of a pod's
// container in those it joins. An exec process's cgroup and mount
// namespaces are joined by the child itself: the kernel refuses
// CLONE_INTO_CGROUP from a cgroup outside the caller's cgroup namespace,
// and setns(CLONE_NEWNS) to a thread of a multi-threaded process; nor
// could the agent binary be re-executed from inside the container's root.
func openNamespaces(pid int, names []string) ([]nsFile, error) {
	var out []nsFile
	for _, ns := range joinableNamespaces {
		if !slices.Contains(names, ns.name) {
			continue
		}
		p := fmt.Sprintf("/proc/%d/ns/%s", pid, ns.name)
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			closeNamespaces(out)
			return nil, fmt.Errorf("open %s: %w", p, err)
		}
		out = append(out, nsFile{name: ns.name, fd: fd, flag: ns.flag})
	}
	return out, nil
}

func closeNamespaces(ns []nsFile) {
	for _, n := range ns {
		unix.Close(n.fd)
	}
}

// runInNamespaces runs start (which forks) on a thread of its own that
// joined the namespaces first; the PID namespace applies to its children
// only. The thread is never unlocked: it ends with its goroutine, so no
// other code ever runs with its namespaces. Without namespaces, start runs
// here.
func runInNamespaces(ns []nsFile, start func() (int, error)) (int, error) {
	if len(ns) == 0 {
		return start()
	}
	type result struct {
		pid int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		for _, n := range ns {
			if err := unix.Setns(n.fd, n.flag); err != nil {
				ch <- result{err: fmt.Errorf("join the container's %s namespace: %w", n.name, err)}
				return
			}
		}
		pid, err := start()
		ch <- result{pid, err}
	}()
	r := <-ch
	return r.pid, r.err
}

// ownMountNS refuses the agent's own mount namespace as an init's: an
// exec process started in it would have the guest's root for its own.
// Every init makes one of its own before it reports ready, so this is a
// check that it did.
func ownMountNS(ns *os.File) error {
	var theirs, ours unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &theirs); err != nil {
		return fmt.Errorf("stat the init's mount namespace: %w", err)
	}
	if err := unix.Stat("/proc/self/ns/mnt", &ours); err != nil {
		return fmt.Errorf("stat the agent's mount namespace: %w", err)
	}
	if theirs.Dev == ours.Dev && theirs.Ino == ours.Ino {
		return errors.New("the container init is in the agent's mount namespace")
	}
	return nil
}

func validExecID(eid string) error {
	if eid == "" {
		return errors.New("exec id must not be empty")
	}
	if len(eid) > 1024 || strings.ContainsRune(eid, 0) {
		return fmt.Errorf("invalid exec id %q", eid)
	}
	return nil
}

// Exec prepares another process in a created or running container: in the
// init's PID, UTS, IPC, cgroup and mount namespaces (so its root is the
// init's) and its cgroup; it waits for Start like the init.
func (m *Manager) Exec(ctx context.Context, req *api.ExecProcessRequest) error {
	cid, eid := req.GetContainerId(), req.GetExecId()
	if err := validExecID(eid); err != nil {
		return fmt.Errorf("container %q: %v: %w", cid, err, errdefs.ErrInvalidArgument)
	}
	cfg, err := processConfig(req.GetProcess())
	if err != nil {
		return fmt.Errorf("exec %q in container %q: %v: %w", eid, cid, err, errdefs.ErrInvalidArgument)
	}
	c, err := m.get(cid)
	if err != nil {
		return err
	}

	// Reserve the id, then wait for the streams without holding the
	// container (its other processes keep being served meanwhile).
	c.mu.Lock()
	if err := c.execPrecondition(eid); err != nil {
		c.mu.Unlock()
		return err
	}
	c.pending[eid] = true
	c.mu.Unlock()
	stdio, err := m.takeStdio(ctx, cid, eid, req.GetStdio())
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, eid)
	if err != nil {
		return err
	}
	if err := c.execPrecondition(eid); err != nil {
		stdio.close()
		return err
	}
	init := c.procs[""]
	ns, err := openNamespaces(init.Pid, allJoinable)
	if err != nil {
		stdio.close()
		return fmt.Errorf("exec %q in container %q: %w", eid, cid, err)
	}
	defer closeNamespaces(ns)
	cgns, err := os.Open(fmt.Sprintf("/proc/%d/ns/cgroup", init.Pid))
	if err != nil {
		stdio.close()
		return fmt.Errorf("exec %q in container %q: %w", eid, cid, err)
	}
	defer cgns.Close()
	mntns, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", init.Pid))
	if err != nil {
		stdio.close()
		return fmt.Errorf("exec %q in container %q: %w", eid, cid, err)
	}
	defer mntns.Close()
	if err := ownMountNS(mntns); err != nil {
		stdio.close()
		return fmt.Errorf("exec %q in container %q: %w", eid, cid, err)
	}
	// Checked again with the namespaces open: the pid was still the init.
	if init.hasExited() {
		stdio.close()
		return fmt.Errorf("cannot exec in container %q: it is not running (its init process has exited): %w", cid, errdefs.ErrFailedPrecondition)
	}
	if old := c.procs[eid]; old != nil {
		m.forget(c, old) // done: nothing left to wait for
	}

	cfg.Rootfs = c.rootfs
	cfg.Env = addEnvDefaults(cfg.Env, c.env)
	cfg.Exec = true
	p := newProcess(cid, eid)
	start := time.Now()
	err = m.spawn(c, p, spawnSpec{cfg: cfg, terminal: req.GetProcess().GetTerminal(), ptmx: c.ptmx, stdio: stdio, join: ns, cgroupNS: cgns, mountNS: mntns})
	if err != nil {
		agentlog.Errorf("container %s: exec %s: %v", cid, eid, err)
		if p.Pid != 0 {
			m.forget(c, p)
		}
		return err
	}
	agentlog.Debugf("container %s: exec %s prepared (pid %d) in %s", cid, eid, p.Pid, time.Since(start).Round(time.Millisecond))
	return nil
}

// execPrecondition: the container must exist with a live init, and the
// exec id must be new. c.mu is held.
func (c *Container) execPrecondition(eid string) error {
	if c.deleted {
		return fmt.Errorf("container %q: %w", c.ID, errdefs.ErrNotFound)
	}
	// A finished exec's id may be used again (as after DeleteProcess).
	if p, ok := c.procs[eid]; (ok && !p.isDone()) || c.pending[eid] {
		return fmt.Errorf("exec %q already exists in container %q: %w", eid, c.ID, errdefs.ErrAlreadyExists)
	}
	init, ok := c.procs[""]
	if !ok || init.Pid == 0 {
		return fmt.Errorf("cannot exec in container %q: it has no init process: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	if init.hasExited() {
		return fmt.Errorf("cannot exec in container %q: it is not running (its init process has exited): %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// forget kills a process (if it is still there), waits for it and its
// output and removes it from c. c.mu is held.
func (m *Manager) forget(c *Container, p *Process) {
	if !p.hasExited() {
		_ = unix.Kill(p.Pid, unix.SIGKILL)
	}
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		agentlog.Warnf("container %s: process %d did not exit after SIGKILL", c.ID, p.Pid)
	}
	select {
	case <-p.done:
	case <-time.After(m.cfg.MaxDrain + time.Second):
	}
	if p.sync != nil {
		p.sync.Close()
	}
	delete(c.procs, p.ExecID)
}

// DeleteProcess forgets an exec process that has exited, or kills and
// forgets one that was never started; its exec id may then be used again.
func (m *Manager) DeleteProcess(ctx context.Context, cid, eid string) error {
	if eid == "" {
		return fmt.Errorf("container %q: DeleteProcess needs an exec id (the init goes with DeleteContainer): %w", cid, errdefs.ErrInvalidArgument)
	}
	c, p, err := m.process(cid, eid)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.procs[eid] != p {
		return fmt.Errorf("process %q of container %q: %w", eid, cid, errdefs.ErrNotFound)
	}
	p.mu.Lock()
	started := p.started
	p.mu.Unlock()
	if started && !p.hasExited() {
		return fmt.Errorf("exec %q of container %q is still running (pid %d): %w", eid, cid, p.Pid, errdefs.ErrFailedPrecondition)
	}
	m.forget(c, p)
	agentlog.Debugf("container %s: exec %s deleted", cid, eid)
	return nil
}

// ResizePty sets the window size of a process's terminal. A process
// without a terminal, or one that is done, has nothing to resize.
func (m *Manager) ResizePty(ctx context.Context, cid, eid string, width, height uint32) error {
	_, p, err := m.process(cid, eid)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.console == nil {
		return nil
	}
	if err := setWinsize(p.console, width, height); err != nil {
		return fmt.Errorf("resize terminal of process %d: %w", p.Pid, err)
	}
	return nil
}
