// Package container runs OCI containers inside the guest: it mounts the
// container's root (a virtio-fs share) and mounts, fills /dev, creates the
// container's cgroup, starts its init process stopped before exec (see
// initproc), plumbs stdio between pipes and the host's streams, and tears
// all of it down again.
package container

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/api/phase"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agentlog"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/channel"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/initproc"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/reaper"
)

// Streams hands out the stdio streams the host opened (channel.Registry).
type Streams interface {
	Take(ctx context.Context, k channel.Key) (net.Conn, error)
	DropContainer(id string)
}

// Config holds the manager's paths and timeouts.
type Config struct {
	StateDir   string // containers live in StateDir/<id>
	SharesDir  string // virtio-fs shares are mounted at SharesDir/<tag>
	FilesDir   string // files shown in a container are in FilesDir/<id>
	CgroupRoot string // cgroups are CgroupRoot/<id>
	PodShmDir  string // the pod's /dev/shm tmpfs (api.PodShmMountType), mounted at its first use
	Exe        string // the agent binary, re-executed as the container init
	// StdioTimeout bounds the wait for the stdio streams a create names.
	StdioTimeout time.Duration
	// DrainGrace: after a process exited, its output is still copied until
	// the pipe has been quiet this long (a background child holding it).
	DrainGrace time.Duration
	// MaxDrain caps the copying after exit.
	MaxDrain time.Duration
}

// DefaultConfig is the in-guest configuration.
func DefaultConfig() Config {
	return Config{
		StateDir:     "/run/gondolin/containers",
		SharesDir:    api.SharesDir,
		FilesDir:     "/run/gondolin/files",
		CgroupRoot:   "/sys/fs/cgroup",
		PodShmDir:    "/run/gondolin/pod/shm",
		Exe:          "/proc/self/exe",
		StdioTimeout: 10 * time.Second,
		DrainGrace:   time.Second,
		MaxDrain:     10 * time.Second,
	}
}

// Manager owns the guest's containers.
type Manager struct {
	cfg     Config
	reaper  *reaper.Reaper
	streams Streams

	oom *oomWatcher
	// memTotal reads the guest's memory size (MemTotal, bytes).
	memTotal func() (uint64, error)
	// mountShare mounts the virtio-fs share tag on target (mountVirtiofs;
	// tests stand a directory in for it).
	mountShare func(tag, target string, flags uintptr) error
	podShm     *podShm

	mu         sync.Mutex
	containers map[string]*Container
	shares     map[string]*share
	prestarted *prestartedInit // the next container's init, if started (Prestart)
}

// NewManager returns a manager starting processes through r.
func NewManager(cfg Config, r *reaper.Reaper, s Streams) *Manager {
	return &Manager{cfg: cfg, reaper: r, streams: s, containers: map[string]*Container{},
		shares: map[string]*share{}, oom: newOOMWatcher(), memTotal: readMemTotal,
		mountShare: func(tag, target string, flags uintptr) error { return mountVirtiofs(tag, target, flags, "") },
		podShm:     &podShm{dir: cfg.PodShmDir}}
}

// Container is one container of the guest.
type Container struct {
	ID     string
	dir    string
	rootfs string
	cgroup string

	files  string   // its agent files (FilesDir/<id>)
	ptmx   string   // where its terminals come from
	shares []string // tags of the shares it holds
	// env is added to the environment of each of its processes unless
	// the process sets the variable (the CA bundle's variables).
	env []string

	// mu serialises create, delete and process changes of this container.
	mu      sync.Mutex
	procs   map[string]*Process
	pending map[string]bool // exec ids being set up
	deleted bool
}

// Process is a process of a container (exec id "" is its init).
type Process struct {
	ContainerID string
	ExecID      string
	Pid         int

	sync *os.File // agent end of the socket to the waiting init
	// prestarted: the init was started before its container (Prestart).
	prestarted bool

	// beforeDone runs after the exit, before done is closed (the init's
	// last OOM check, so an OOM event precedes WaitProcess's answer).
	beforeDone func()

	mu      sync.Mutex
	started bool
	console *os.File // terminal master, until the process is done
	exit    reaper.Exit
	exited  chan struct{} // closed when the process has been reaped
	done    chan struct{} // closed when exited and its output is drained
	io      sync.WaitGroup
}

// devicesDir is where the tmpfs with the container's device nodes is
// mounted (deviceSource): in its state directory, outside its root.
func (c *Container) devicesDir() string { return filepath.Join(c.dir, "devices") }

func newProcess(cid, eid string) *Process {
	return &Process{ContainerID: cid, ExecID: eid, exited: make(chan struct{}), done: make(chan struct{})}
}

func (p *Process) onExit(e reaper.Exit) {
	p.mu.Lock()
	p.exit = e
	p.mu.Unlock()
	// A container's own exit explains a failure; every exec's would
	// fill the console of a container probed by exec every few seconds.
	logExit := agentlog.Infof
	if p.ExecID != "" {
		logExit = agentlog.Debugf
	}
	logExit("container %s: process %d exited with status %d", p.ContainerID, e.Pid, e.Status)
	close(p.exited)
	go func() {
		p.io.Wait()
		p.mu.Lock()
		if p.console != nil {
			// Whatever still holds the terminal gets SIGHUP.
			p.console.Close()
			p.console = nil
		}
		p.mu.Unlock()
		if p.beforeDone != nil {
			p.beforeDone()
		}
		close(p.done)
	}()
}

func (p *Process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

func (p *Process) isDone() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *Process) exitInfo() reaper.Exit {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// ValidID rejects ids that are not a single path element.
func ValidID(id string) error {
	if id == "" {
		return errors.New("container id must not be empty")
	}
	if id == "." || id == ".." || strings.ContainsAny(id, "/\x00") || len(id) > 1024 {
		return fmt.Errorf("invalid container id %q", id)
	}
	return nil
}

func (m *Manager) get(id string) (*Container, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

func (m *Manager) process(cid, eid string) (*Container, *Process, error) {
	c, err := m.get(cid)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.procs[eid]
	if !ok || c.deleted {
		if eid == "" {
			return nil, nil, fmt.Errorf("container %q: %w", cid, errdefs.ErrNotFound)
		}
		return nil, nil, fmt.Errorf("process %q of container %q: %w", eid, cid, errdefs.ErrNotFound)
	}
	return c, p, nil
}

// Create prepares a container and its init process, which waits for Start.
func (m *Manager) Create(ctx context.Context, req *api.CreateContainerRequest) (int, error) {
	id := req.GetContainerId()
	if err := ValidID(id); err != nil {
		return 0, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	if req.GetProcess() == nil || len(req.GetProcess().GetArgs()) == 0 {
		return 0, fmt.Errorf("container %q: process args must not be empty: %w", id, errdefs.ErrInvalidArgument)
	}
	if req.GetRootfsTag() == "" {
		return 0, fmt.Errorf("container %q: rootfs_tag must not be empty: %w", id, errdefs.ErrInvalidArgument)
	}
	if req.GetRootfsPath() != "" {
		if err := validTag(req.GetRootfsTag()); err != nil {
			return 0, fmt.Errorf("container %q: rootfs_tag: %v: %w", id, err, errdefs.ErrInvalidArgument)
		}
		if err := validRootfsPath(req.GetRootfsPath()); err != nil {
			return 0, fmt.Errorf("container %q: %v: %w", id, err, errdefs.ErrInvalidArgument)
		}
	}
	joinID, joinNames, err := parseJoin(req)
	if err != nil {
		return 0, fmt.Errorf("container %q: %v: %w", id, err, errdefs.ErrInvalidArgument)
	}
	// What the request can get wrong is refused before anything is made.
	cfg, err := processConfig(req.GetProcess())
	if err != nil {
		return 0, fmt.Errorf("container %q: %v: %w", id, err, errdefs.ErrInvalidArgument)
	}
	res, err := m.parseResources(req.GetResourcesJson())
	if err != nil {
		return 0, fmt.Errorf("container %q: %v: %w", id, err, errdefs.ErrInvalidArgument)
	}
	for _, sh := range req.GetShares() {
		if err := validTag(sh.GetTag()); err != nil {
			return 0, fmt.Errorf("container %q: %v: %w", id, err, errdefs.ErrInvalidArgument)
		}
	}
	if err := checkMounts(req.GetMounts(), m.cfg.SharesDir, requestTags(req)); err != nil {
		return 0, fmt.Errorf("container %q: %v: %w", id, err, errdefs.ErrInvalidArgument)
	}
	for k := range req.GetSysctl() {
		if _, err := initproc.SysctlPath("/proc/sys", k); err != nil {
			return 0, fmt.Errorf("container %q: %v: %w", id, err, errdefs.ErrInvalidArgument)
		}
	}
	certs, err := parseCAPEM(req.GetExtraCaPem())
	if err != nil {
		return 0, fmt.Errorf("container %q: %v: %w", id, err, errdefs.ErrInvalidArgument)
	}
	// The namespaces to join are opened before this container exists and
	// holds its lock: two containers joining each other at once must not
	// wait for each other.
	var join []nsFile
	if joinID != "" {
		if join, err = m.openJoin(id, joinID, joinNames); err != nil {
			return 0, err
		}
		defer closeNamespaces(join)
		if err := checkJoinedHostname(join, joinID, req.GetHostname()); err != nil {
			return 0, fmt.Errorf("container %q: %w", id, err)
		}
	}
	c := &Container{
		ID:      id,
		dir:     filepath.Join(m.cfg.StateDir, id),
		files:   filepath.Join(m.cfg.FilesDir, id),
		cgroup:  filepath.Join(m.cfg.CgroupRoot, id),
		procs:   map[string]*Process{},
		pending: map[string]bool{},
	}
	c.rootfs = filepath.Join(c.dir, "rootfs")
	m.mu.Lock()
	if _, ok := m.containers[id]; ok {
		m.mu.Unlock()
		return 0, fmt.Errorf("container %q: %w", id, errdefs.ErrAlreadyExists)
	}
	m.containers[id] = c
	c.mu.Lock()
	m.mu.Unlock()
	defer c.mu.Unlock()

	steps := phase.Start()
	pid, err := m.create(ctx, c, req, cfg, res, certs, join, steps)
	if err != nil {
		agentlog.Errorf("create container %s: %v", id, err)
		m.teardown(c)
		m.mu.Lock()
		delete(m.containers, id)
		m.mu.Unlock()
		return 0, err
	}
	agentlog.Infof("container %s created (pid %d) in %s (%s)", id, pid, steps.Total().Round(time.Millisecond), steps)
	return pid, nil
}

func (m *Manager) create(ctx context.Context, c *Container, req *api.CreateContainerRequest, cfg initproc.Config, res *specs.LinuxResources, certs []byte, join []nsFile, steps *phase.Timer) (int, error) {
	stdio, err := m.takeStdio(ctx, c.ID, "", req.GetStdio())
	if err != nil {
		return 0, err
	}
	steps.Done("stdio")
	// Until the process owns them, close the streams on failure.
	owned := false
	defer func() {
		if !owned {
			stdio.close()
		}
	}()

	// Shares first: bind mounts of the container take their sources there.
	if err := m.acquireShares(c, req.GetShares()); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(c.rootfs, 0o755); err != nil {
		return 0, fmt.Errorf("create %s: %w", c.rootfs, err)
	}
	// Unless the container may open every device, nothing it can make a
	// node on opens one (see setupDev).
	nodev := !allowsAllDevices(res)
	var rootFlags uintptr
	if nodev {
		rootFlags = unix.MS_NODEV
	}
	// Mounted read-write first: mount points and /dev entries may have to
	// be created; a read-only root becomes read-only after that, as with
	// runc.
	if err := m.mountRootfs(c, req, rootFlags); err != nil {
		return 0, err
	}
	steps.Done("rootfs")
	plan, err := mountAll(c.rootfs, req.GetMounts(), nodev, mountSources{sharesDir: m.cfg.SharesDir, tags: c.shares, podShm: m.podShm})
	if err != nil {
		return 0, err
	}
	setupDev(c.rootfs, c.devicesDir(), plan)
	steps.Done("mounts")
	if err := setupAgentFiles(c, req, certs); err != nil {
		return 0, err
	}
	steps.Done("files")
	if req.GetRootfsReadonly() {
		if err := remountReadonly(c.rootfs, rootFlags); err != nil {
			return 0, err
		}
	}
	c.ptmx = containerPtmx(c.rootfs)

	if err := makeCgroup(c.cgroup); err != nil {
		return 0, err
	}
	if err := applyResources(c.cgroup, res); err != nil {
		return 0, err
	}
	m.oom.add(c.ID, c.cgroup)
	steps.Done("cgroup")

	cfg.Rootfs = c.rootfs
	cfg.Env = addEnvDefaults(cfg.Env, c.env)
	// In a joined UTS namespace the hostname is the one it has
	// (checkJoinedHostname).
	if !slices.ContainsFunc(join, func(n nsFile) bool { return n.name == "uts" }) {
		cfg.Hostname = req.GetHostname()
	}
	cfg.CgroupNS = plan.cgroupNS
	cfg.Mounts = plan.nsMounts
	cfg.Sysctl = req.GetSysctl()
	cfg.MaskedPaths = req.GetMaskedPaths()
	cfg.ReadonlyPaths = req.GetReadonlyPaths()
	p := newProcess(c.ID, "")
	p.beforeDone = func() { m.oom.check(c.ID) }
	owned = true
	if err := m.spawn(c, p, spawnSpec{cfg: cfg, terminal: req.GetProcess().GetTerminal(), ptmx: c.ptmx, stdio: stdio, join: join}); err != nil {
		return 0, err
	}
	if p.prestarted {
		steps.Done("prestarted init")
	} else {
		steps.Done("spawn")
	}
	return p.Pid, nil
}

// Start lets a created process exec.
func (m *Manager) Start(ctx context.Context, cid, eid string) (int, error) {
	_, p, err := m.process(cid, eid)
	if err != nil {
		return 0, err
	}
	p.mu.Lock()
	if p.started {
		p.mu.Unlock()
		return 0, fmt.Errorf("process %d of container %q was already started: %w", p.Pid, cid, errdefs.ErrFailedPrecondition)
	}
	p.started = true
	p.mu.Unlock()
	if p.hasExited() {
		return 0, fmt.Errorf("process of container %q exited before it was started: %w", cid, errdefs.ErrFailedPrecondition)
	}
	if err := release(p); err != nil {
		return 0, err
	}
	agentlog.Debugf("container %s: started pid %d", cid, p.Pid)
	return p.Pid, nil
}

// WaitResult is what Wait returns.
type WaitResult struct {
	Status   uint32
	ExitedAt time.Time
}

// Wait blocks until the process exited and its output streams are closed.
func (m *Manager) Wait(ctx context.Context, cid, eid string) (WaitResult, error) {
	_, p, err := m.process(cid, eid)
	if err != nil {
		return WaitResult{}, err
	}
	select {
	case <-p.done:
		e := p.exitInfo()
		return WaitResult{Status: e.Status, ExitedAt: e.At}, nil
	case <-ctx.Done():
		return WaitResult{}, ctx.Err()
	}
}

// Signal sends sig to the process, or with all to every process of the
// container.
func (m *Manager) Signal(cid, eid string, sig unix.Signal, all bool) error {
	c, p, err := m.process(cid, eid)
	if err != nil {
		return err
	}
	if all {
		return signalCgroup(c.cgroup, sig)
	}
	if p.hasExited() {
		return fmt.Errorf("process %d of container %q already finished: %w", p.Pid, cid, errdefs.ErrNotFound)
	}
	if err := unix.Kill(p.Pid, sig); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("process %d of container %q already finished: %w", p.Pid, cid, errdefs.ErrNotFound)
		}
		return fmt.Errorf("signal %d to pid %d: %w", sig, p.Pid, err)
	}
	return nil
}

// Delete kills what is left of the container and removes it.
func (m *Manager) Delete(ctx context.Context, cid string) error {
	c, err := m.get(cid)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.deleted {
		c.mu.Unlock()
		return fmt.Errorf("container %q: %w", cid, errdefs.ErrNotFound)
	}
	err = m.teardown(c)
	c.mu.Unlock()
	m.mu.Lock()
	delete(m.containers, cid)
	m.mu.Unlock()
	if err != nil {
		agentlog.Errorf("delete container %s: %v", cid, err)
		return err
	}
	agentlog.Infof("container %s deleted", cid)
	return nil
}

// teardown kills every process of c, waits for them, unmounts and removes
// what create made. c.mu is held. It is safe on a half-created container.
func (m *Manager) teardown(c *Container) error {
	c.deleted = true
	var errs []error
	if err := killCgroup(c.cgroup, 10*time.Second); err != nil {
		errs = append(errs, err)
	}
	for _, p := range c.procs {
		if p.Pid != 0 {
			select {
			case <-p.exited:
			case <-time.After(5 * time.Second):
				errs = append(errs, fmt.Errorf("process %d did not exit after SIGKILL", p.Pid))
			}
		}
		select {
		case <-p.done:
		case <-time.After(m.cfg.MaxDrain + time.Second):
		}
		if p.sync != nil {
			p.sync.Close()
		}
	}
	if err := unmountAll(c.dir); err != nil {
		errs = append(errs, err)
	}
	if err := removeAgentFiles(c.files); err != nil {
		errs = append(errs, err)
	}
	m.releaseShares(c)
	m.oom.remove(c.ID)
	if err := removeCgroup(c.cgroup); err != nil {
		errs = append(errs, err)
	}
	// Never RemoveAll: if an unmount failed, the share's files are below.
	for _, d := range []string{c.rootfs, c.devicesDir(), c.dir} {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	m.streams.DropContainer(c.ID)
	return errors.Join(errs...)
}

// Shutdown kills every container and syncs the guest's file systems, for
// power-off: what the containers wrote reaches the host. It leaves the
// mounts: the VM ends next, and unmounting each of a container's mounts
// (a dozen or more) only delayed the host's teardown under TCG.
func (m *Manager) Shutdown() {
	steps := phase.Start()
	m.mu.Lock()
	cs := slices.Collect(maps.Values(m.containers))
	m.mu.Unlock()
	for _, c := range cs {
		_ = killCgroup(c.cgroup, 0)
	}
	for _, c := range cs {
		if err := killCgroup(c.cgroup, 3*time.Second); err != nil {
			agentlog.Warnf("shutdown: %v", err)
		}
	}
	steps.Done("kill")
	unix.Sync()
	steps.Done("sync")
	agentlog.Infof("shutdown: %d containers ended in %s (%s)", len(cs), steps.Total().Round(time.Millisecond), steps)
}

// unmountAll unmounts every mount at or below dir, innermost first, lazily
// when one is busy.
func unmountAll(dir string) error {
	entries, err := readMountinfo()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range MountsUnder(entries, dir) {
		err := unix.Unmount(t, 0)
		if errors.Is(err, unix.EBUSY) {
			err = unix.Unmount(t, unix.MNT_DETACH)
		}
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}
