package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/oci"
	"github.com/earendil-works/gondolin-containerd/vmm"
)

// Container is a container running in its own sandbox.
type Container struct {
	ID     string
	Bundle string
	rt     *Runtime
	sb     *sandbox
	net    *sandboxNetwork // nil without a NIC (net.mode=none)
	netns  *netNS
	// placeholders stand for the secrets' values in every process's
	// environment; the real values stay on the host.
	placeholders map[string]string
	spec         *specs.Spec
	init         *Process
	memoryMiB    uint64
	// cgroup is the container's host cgroup (linux.cgroupsPath) holding
	// QEMU and the virtiofsds; nil without a cgroupsPath.
	cgroup *hostCgroup
	// host is the container's host-side state, whose cleanup undoes
	// everything made on the host for it.
	host *hostState

	// vmStopOnce stops the VM once when a helper dies or the guest is
	// wedged.
	vmStopOnce sync.Once

	mu       sync.Mutex
	execs    map[string]*Process
	isPaused bool

	// stopping is closed when Delete tears the sandbox down on purpose.
	stopping     chan struct{}
	stoppingOnce sync.Once
}

// startWatchers follows the created container: its init's exit, and
// the VM, its file servers (one per share), its agent and its OOM kills.
func (c *Container) startWatchers(shares []share) {
	go c.init.wait(c.sb.agent)
	go c.watchVM()
	go c.watchAgent()
	go c.watchOOM()
	for i, fs := range c.sb.fs {
		go c.watchFileServer(shares[i].tag, fs)
	}
}

// teardown ends the container's VM and releases everything made for it:
// what the shim holds, then, through the host state, what it made on the
// host. It runs to its end even when the client gives up on the call: a
// half-done one leaves processes and mounts behind.
func (c *Container) teardown(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	c.stoppingOnce.Do(func() { close(c.stopping) })
	c.sb.stop(ctx, 3*time.Second)
	c.init.io.Close()
	if err := c.net.Close(); err != nil {
		log.G(ctx).WithError(err).Warn("close the container's network")
	}
	if err := c.netns.Close(); err != nil {
		log.G(ctx).WithError(err).Warn("release the container's network namespace")
	}
	return c.host.cleanup()
}

// watchVM turns a VMM that dies under the container into process exits.
func (c *Container) watchVM() {
	select {
	case <-c.stopping:
		return
	case <-c.sb.vm.Done():
	}
	log.L.WithField("container", c.ID).WithError(c.sb.vm.ExitError()).Error("VM exited unexpectedly")
	// Closing the channel fails the agent calls that wait for exits, which
	// then report the processes as killed.
	c.sb.agent.Close()
	// The file servers have nothing left to serve.
	for _, fs := range c.sb.fs {
		fs.Stop()
	}
}

// watchFileServer turns a virtiofsd that dies under the container (killed,
// crashed) into the end of the task: the guest's file system is gone, so
// the VM is stopped, which reports every process as killed.
func (c *Container) watchFileServer(tag string, fs *vmm.FileServer) {
	select {
	case <-c.stopping:
		return
	case <-c.sb.vm.Done():
		return
	case <-fs.Done():
	}
	select {
	case <-c.stopping:
		return
	default:
	}
	c.stopVM(fmt.Sprintf("virtiofsd of share %q (pid %d) exited: %s", tag, fs.Pid(), fs.Stderr()))
}

// stopVM ends the VM for good (once) because it cannot go on: a helper
// died or the guest stopped answering. watchVM then reports the processes
// killed. QEMU gets a moment to quit over QMP, which a wedged QEMU does not
// answer, and is killed after that.
func (c *Container) stopVM(reason string) {
	c.vmStopOnce.Do(func() {
		log.L.WithField("container", c.ID).Errorf("%s: stopping the VM", reason)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := c.sb.vm.Stop(ctx, 0); err != nil {
			log.L.WithError(err).WithField("container", c.ID).Warn("stop VM")
		}
	})
}

// callTimeout bounds one agent call made for the task API
// (limits.agent_call_timeout).
func (c *Container) callTimeout() time.Duration {
	return c.rt.cfg.Runtime.Limits.AgentCallTimeout.Duration
}

// guestCall runs one agent call made for the task API within
// limits.agent_call_timeout. A guest that does not answer by then is
// wedged: its VM is stopped, so that the task ends with its processes
// reported killed instead of every later call hanging too. A paused VM
// cannot answer at all: the call fails at once.
func (c *Container) guestCall(ctx context.Context, what string, call func(context.Context) error) error {
	if c.paused() {
		return fmt.Errorf("%s: container %s is paused: %w", what, c.ID, errdefs.ErrFailedPrecondition)
	}
	d := c.callTimeout()
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err := call(cctx)
	if err != nil && errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil && !c.paused() {
		c.stopVM(fmt.Sprintf("%s: the guest did not answer within %s (limits.agent_call_timeout)", what, d))
		return fmt.Errorf("%s: the guest did not answer within %s (limits.agent_call_timeout); its VM was stopped: %w", what, d, errdefs.ErrUnavailable)
	}
	return err
}

// Agent liveness: a guest whose agent stops answering (a wedged kernel, a
// VMM stuck outside QMP) must become an exit, not a hang.
const (
	heartbeatInterval = 5 * time.Second
	heartbeatTimeout  = 5 * time.Second
	heartbeatMisses   = 3
)

// watchAgent pings the agent while the VM runs; after heartbeatMisses
// missed answers in a row it kills the VM, which ends the processes.
func (c *Container) watchAgent() {
	misses := 0
	tick := time.NewTicker(heartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-c.stopping:
			return
		case <-c.sb.vm.Done():
			return
		case <-tick.C:
		}
		if c.paused() {
			misses = 0
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), heartbeatTimeout)
		_, err := c.sb.agent.Info(ctx, &api.Empty{})
		cancel()
		if err == nil || c.paused() {
			misses = 0
			continue
		}
		misses++
		log.L.WithError(err).WithField("container", c.ID).Warnf("guest agent did not answer (%d/%d)", misses, heartbeatMisses)
		if misses >= heartbeatMisses {
			log.L.WithField("container", c.ID).Errorf("guest agent missed %d heartbeats in a row: stopping the VM", heartbeatMisses)
			c.stopVM(fmt.Sprintf("guest agent missed %d heartbeats in a row", heartbeatMisses))
			return
		}
	}
}

// watchOOM reports the guest kernel's OOM kills in the container, at most
// limits.guest_events_per_second of them: the guest may send as many as it
// likes, and each becomes an event containerd stores and forwards.
func (c *Container) watchOOM() {
	ctx, cancel := c.runningContext()
	defer cancel()
	relayOOM(ctx, c.ID, c.rt.cfg.Runtime.Limits.GuestEventsPerSecond, func(ctx context.Context) (string, error) {
		ev, err := c.sb.agent.WaitOOM(ctx, &api.Empty{})
		return ev.GetContainerId(), err
	}, func() { c.rt.cfg.OnOOM(c.ID) })
}

// relayOOM asks the guest for OOM events with wait until ctx ends and
// publishes those of container id, no more than perSecond a second (with
// a burst of as many): past that it does not ask the guest again until the
// rate allows, so a flood costs the host neither events nor CPU.
func relayOOM(ctx context.Context, id string, perSecond int, wait func(context.Context) (string, error), publish func()) {
	limiter := rate.NewLimiter(rate.Limit(perSecond), perSecond)
	var throttled bool
	for {
		if !limiter.Allow() {
			if !throttled {
				log.L.WithField("container", id).Warnf("the guest reports more than %d OOM events a second (limits.guest_events_per_second): reporting them no faster", perSecond)
				throttled = true
			}
			if err := limiter.Wait(ctx); err != nil {
				return
			}
		}
		got, err := wait(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// A transient error (or an agent without OOM support): try
			// again rather than lose OOM events.
			log.L.WithError(err).WithField("container", id).Debug("wait for OOM events")
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		if got == id {
			publish()
		}
	}
}

func (c *Container) pid() uint32 {
	if c.sb == nil || c.sb.vm == nil {
		return 0
	}
	return uint32(c.sb.vm.Pid())
}

func (c *Container) paused() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.isPaused
}

// Accelerator is how the container's VM runs (kvm or tcg).
func (c *Container) Accelerator() string { return string(c.sb.accel) }

// Process returns the init process (execID "") or an exec.
func (c *Container) Process(execID string) (*Process, error) {
	if execID == "" {
		return c.init, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok {
		return nil, fmt.Errorf("exec %s in %s: %w", execID, c.ID, errdefs.ErrNotFound)
	}
	return p, nil
}

// State reports a process's state; the init process for execID "".
func (c *Container) State(execID string) (State, error) {
	p, err := c.Process(execID)
	if err != nil {
		return State{}, err
	}
	return p.State(), nil
}

// Start lets the init process run.
func (c *Container) Start(ctx context.Context) (uint32, error) {
	timing := newPhases()
	hooks := c.spec.Hooks
	if hooks != nil && len(hooks.StartContainer) > 0 {
		state, err := c.hookState(specs.StateCreated)
		if err != nil {
			return 0, err
		}
		if err := runHooks(ctx, "startContainer", hooks.StartContainer, state); err != nil {
			return 0, fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
		}
	}
	timing.done("hooks")
	if err := c.configureNetwork(ctx); err != nil {
		return 0, err
	}
	timing.done("network")
	pid, err := c.init.Start(ctx)
	if err != nil {
		return 0, err
	}
	timing.done("guest_start")
	log.G(ctx).WithFields(timing.fields).WithField("container", c.ID).Debug("container started")
	if hooks != nil && len(hooks.Poststart) > 0 {
		if state, err := c.hookState(specs.StateRunning); err == nil {
			runHooksLogged(ctx, "poststart", hooks.Poststart, state)
		}
	}
	return pid, nil
}

// configureNetwork gives the guest its NIC's configuration from the
// container's network namespace, just before the init runs, and follows
// the namespace's changes afterwards: Docker (26 and later) configures the
// namespace after the task is created, so at create time it may still be
// empty, and docker network connect changes it while the container runs.
// An empty namespace at start (docker --network none, a plain ctr run)
// means no NIC at all, as with runc.
func (c *Container) configureNetwork(ctx context.Context) (retErr error) {
	network := c.net
	if network == nil {
		return nil
	}
	// Subscribe before reading, so no change falls between the two.
	entry := log.G(ctx).WithField("container", c.ID)
	watch, err := c.netns.watch(entry)
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil && watch != nil {
			watch.Close()
		}
	}()
	link, err := c.netns.link()
	if err != nil {
		return fmt.Errorf("read the container's network namespace: %w", err)
	}
	if link.empty {
		if watch != nil {
			watch.Close()
		}
		if err := c.guestCall(ctx, "detach the guest's NIC", func(ctx context.Context) error {
			_, err := c.sb.agent.ConfigureNetwork(ctx, &api.ConfigureNetworkRequest{Mac: network.guestConfig().Mac, Detach: true})
			return err
		}); err != nil {
			return fmt.Errorf("detach the guest's NIC: %w", agentError(err))
		}
		return nil
	}
	if err := c.applyNetwork(ctx, link); err != nil {
		return err
	}
	if watch != nil {
		go func() {
			runCtx, cancel := c.runningContext()
			defer cancel()
			c.followNetNS(log.WithLogger(runCtx, entry), watch, link)
		}()
	}
	go c.publishListeners()
	return nil
}

// applyNetwork gives the guest the addresses its namespace has. The guest
// takes the address its namespace was given, so that what the container
// sees matches what Docker or Kubernetes report.
func (c *Container) applyNetwork(ctx context.Context, link nsLink) error {
	if link.ok {
		if err := c.net.policy.SetLinkAddresses(link.addr, link.gateway); err != nil {
			return err
		}
	}
	req := c.net.guestConfig()
	for _, p := range link.extra {
		req.ExtraAddresses = append(req.ExtraAddresses, p.String())
	}
	if err := c.guestCall(ctx, "configure the guest's network", func(ctx context.Context) error {
		_, err := c.sb.agent.ConfigureNetwork(ctx, req)
		return err
	}); err != nil {
		return fmt.Errorf("configure the guest's network: %w", agentError(err))
	}
	return nil
}

// runningContext is cancelled when the container is deleted or its VM
// goes away, for the work that follows a running container.
func (c *Container) runningContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-c.stopping:
		case <-c.sb.vm.Done():
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}

// hookState is the container's state for its hooks.
func (c *Container) hookState(status specs.ContainerState) ([]byte, error) {
	pid := 0
	if c.sb != nil && c.sb.vm != nil {
		pid = c.sb.vm.Pid()
	}
	return hookState(c.spec, c.ID, c.Bundle, status, pid)
}

// Exec prepares another process in the container; Start runs it.
func (c *Container) Exec(ctx context.Context, execID string, spec *specs.Process, stdio Stdio) (_ *Process, retErr error) {
	if execID == "" {
		return nil, fmt.Errorf("an exec needs an ID: %w", errdefs.ErrInvalidArgument)
	}
	if st := c.init.State(); st.Status == StatusStopped {
		return nil, fmt.Errorf("container %s is not running (its process exited with status %d): cannot exec in it: %w", c.ID, st.ExitStatus, errdefs.ErrFailedPrecondition)
	}
	proc, err := oci.GuestProcess(spec, c.placeholders)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	c.mu.Lock()
	if _, ok := c.execs[execID]; ok {
		c.mu.Unlock()
		return nil, fmt.Errorf("exec %s in %s: %w", execID, c.ID, errdefs.ErrAlreadyExists)
	}
	c.execs[execID] = nil // reserved while it is being set up
	c.mu.Unlock()
	defer func() {
		if retErr != nil {
			c.mu.Lock()
			delete(c.execs, execID)
			c.mu.Unlock()
		}
	}()

	hio, err := openHostIO(ctx, c.ID, c.rt.cfg.Namespace, stdio)
	if err != nil {
		return nil, err
	}
	p := newProcess(c, execID, stdio, hio)
	// Opening a stream waits for the guest once too many are unanswered:
	// bounded like a call, and the VM's stop ends the wait.
	type attached struct {
		want *api.Stdio
		err  error
	}
	res := make(chan attached, 1)
	var want *api.Stdio
	err = c.guestCall(ctx, "open the exec's stdio", func(ctx context.Context) error {
		go func() {
			w, err := p.attachStdio(c.sb.agent)
			res <- attached{w, err}
		}()
		select {
		case r := <-res:
			want = r.want
			return r.err
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if err != nil {
		hio.Close()
		return nil, err
	}
	if err := c.guestCall(ctx, "exec in "+c.ID, func(ctx context.Context) error {
		_, err := c.sb.agent.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: c.ID, ExecId: execID, Process: proc, Stdio: want})
		return err
	}); err != nil {
		p.CloseStdin()
		hio.Close()
		return nil, processStartError("exec", "exec in "+c.ID, err)
	}
	go p.wait(c.sb.agent)
	c.mu.Lock()
	c.execs[execID] = p
	c.mu.Unlock()
	return p, nil
}

// DeleteExec removes a stopped exec process.
func (c *Container) DeleteExec(ctx context.Context, execID string) (Exit, error) {
	p, err := c.Process(execID)
	if err != nil {
		return Exit{}, err
	}
	st := p.State()
	if st.Status == StatusRunning || st.Status == StatusPaused {
		return Exit{}, fmt.Errorf("exec %s is running; stop it first: %w", execID, errdefs.ErrFailedPrecondition)
	}
	// The agent kills an exec that never started and forgets it, so that
	// its ID can be used again.
	select {
	case <-c.sb.vm.Done():
		// Nothing is left in the guest to forget it.
	default:
		if err := c.guestCall(ctx, "delete exec "+execID, func(ctx context.Context) error {
			_, err := c.sb.agent.DeleteProcess(ctx, &api.DeleteProcessRequest{ContainerId: c.ID, ExecId: execID})
			return err
		}); err != nil {
			return Exit{}, fmt.Errorf("delete exec %s of %s: %w", execID, c.ID, agentError(err))
		}
	}
	exit, err := p.Wait(ctx)
	if err != nil {
		return Exit{}, err
	}
	p.io.Close()
	c.mu.Lock()
	delete(c.execs, execID)
	c.mu.Unlock()
	return exit, nil
}

// Pause stops the VM's vCPUs.
func (c *Container) Pause(ctx context.Context) error {
	// Read the state before taking c.mu: State takes the process lock and
	// then c.mu.
	if st := c.init.State(); st.Status != StatusRunning {
		return fmt.Errorf("container %s is %s: only a running container can be paused: %w", c.ID, st.Status, errdefs.ErrFailedPrecondition)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isPaused {
		return nil
	}
	if err := c.sb.vm.Pause(ctx); err != nil {
		return fmt.Errorf("pause %s: %w", c.ID, err)
	}
	c.isPaused = true
	return nil
}

// Resume lets a paused VM run again.
func (c *Container) Resume(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.isPaused {
		return nil
	}
	if err := c.sb.vm.Resume(ctx); err != nil {
		return fmt.Errorf("resume %s: %w", c.ID, err)
	}
	c.isPaused = false
	return nil
}

// ProcessInfo is one process of the container as the guest sees it.
type ProcessInfo struct {
	Pid     uint32
	Command string
}

// Pids lists the container's processes (guest PIDs).
func (c *Container) Pids(ctx context.Context) ([]ProcessInfo, error) {
	var resp *api.ListProcessesResponse
	err := c.guestCall(ctx, "list processes", func(ctx context.Context) (err error) {
		resp, err = c.sb.agent.ListProcesses(ctx, &api.ListProcessesRequest{ContainerId: c.ID})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list processes of %s: %w", c.ID, agentError(err))
	}
	out := make([]ProcessInfo, 0, len(resp.Processes))
	for _, p := range resp.Processes {
		out = append(out, ProcessInfo{Pid: p.Pid, Command: p.Command})
	}
	return out, nil
}

// StatsTypeURL is the type of the bytes Stats returns.
const StatsTypeURL = "io.containerd.cgroups.v2.Metrics"

// Stats returns the container's cgroup v2 metrics, proto-encoded as
// StatsTypeURL. With a host cgroup, what counts against the host comes
// from it: CPU, memory and memory events are the VM's host processes'
// (QEMU and the virtiofsds), which the guest cannot fake. Pids, IO, RDMA
// and hugetlb figures are the guest's word about the container's own
// cgroup inside the VM. Without a host cgroup every figure is the guest's.
func (c *Container) Stats(ctx context.Context) ([]byte, error) {
	if c.cgroup != nil && c.paused() {
		// A paused VM cannot answer; the host's figures are there.
		host, err := c.cgroup.figures()
		if err != nil {
			return nil, fmt.Errorf("stats of %s: %w", c.ID, err)
		}
		return mergeHostFigures(nil, host)
	}
	var resp *api.StatsResponse
	err := c.guestCall(ctx, "read stats", func(ctx context.Context) (err error) {
		resp, err = c.sb.agent.Stats(ctx, &api.StatsRequest{ContainerId: c.ID})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", c.ID, agentError(err))
	}
	if c.cgroup == nil {
		return resp.Metrics, nil
	}
	host, err := c.cgroup.figures()
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", c.ID, err)
	}
	return mergeHostFigures(resp.Metrics, host)
}

// mergeHostFigures puts the host cgroup's figures into the guest's metrics.
func mergeHostFigures(guest []byte, host hostFigures) ([]byte, error) {
	var m v2stats.Metrics
	if err := proto.Unmarshal(guest, &m); err != nil {
		// The guest's bytes are the guest's: a malformed message
		// leaves the host's figures alone.
		log.L.WithError(err).Debug("guest metrics are not a cgroup v2 Metrics message")
		m.Reset()
	}
	m.CPU, m.Memory, m.MemoryEvents = host.cpu, host.memory, host.events
	b, err := proto.Marshal(&m)
	if err != nil {
		return nil, fmt.Errorf("encode metrics: %w", err)
	}
	return b, nil
}

// Update changes the container's resource limits inside the guest. The VM
// itself keeps the memory and vCPUs it booted with.
func (c *Container) Update(ctx context.Context, res *specs.LinuxResources) error {
	if res == nil {
		return nil
	}
	if m := res.Memory; m != nil && m.Limit != nil && *m.Limit > 0 && uint64(*m.Limit)>>20 > c.memoryMiB {
		return fmt.Errorf("memory limit of %d MiB exceeds the %d MiB the VM of %s was booted with; the VM size is fixed at create (set io.gondolin.vm.memory or a larger limit at create): %w",
			uint64(*m.Limit)>>20, c.memoryMiB, c.ID, errdefs.ErrInvalidArgument)
	}
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode resources: %w", err)
	}
	if err := c.guestCall(ctx, "update resources", func(ctx context.Context) error {
		_, err := c.sb.agent.UpdateContainer(ctx, &api.UpdateContainerRequest{ContainerId: c.ID, ResourcesJson: b})
		return err
	}); err != nil {
		return fmt.Errorf("update %s: %w", c.ID, agentError(err))
	}
	return nil
}

// Delete removes the container once its init process has stopped (or never
// started): the VM, its file servers, mounts and state go with it.
func (c *Container) Delete(ctx context.Context) (Exit, error) {
	p := c.init
	st := p.State()
	if st.Status == StatusRunning || st.Status == StatusPaused {
		return Exit{}, fmt.Errorf("container %s is running; stop it first: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	if st.Status == StatusCreated {
		// Never started: end it as runc does, killed.
		p.setExited(128+uint32(unix.SIGKILL), time.Now())
	}
	err := c.teardown(ctx)
	if hooks := c.spec.Hooks; hooks != nil && len(hooks.Poststop) > 0 {
		if state, herr := c.hookState(specs.StateStopped); herr == nil {
			runHooksLogged(ctx, "poststop", hooks.Poststop, state)
		}
	}
	// The VM is gone: a process whose exit its wait has not recorded yet
	// (its output still being copied) is recorded killed now, so that
	// nothing waits on it forever.
	killed := uint32(128 + unix.SIGKILL)
	c.mu.Lock()
	for _, e := range c.execs {
		if e != nil {
			e.setExited(killed, time.Now())
			e.io.Close()
		}
	}
	c.mu.Unlock()
	p.setExited(killed, time.Now())
	c.rt.remove(c.ID)
	exit, _ := p.Wait(ctx)
	if err != nil {
		return exit, fmt.Errorf("delete %s: %w", c.ID, err)
	}
	return exit, nil
}

// vmCgroupLimits are the host cgroup's limits for a VM of memMiB and cpus:
// memory.max is the VM's memory plus what its host processes need beside
// it (limits.host_memory_overhead_mib); cpu.max, when the container has a
// CPU quota, is the VM's vCPUs' worth of the quota's period (the quota
// rounded up to whole vCPUs: the guest enforces the exact quota inside).
func vmCgroupLimits(spec *specs.Spec, memMiB uint64, cpus uint32, overheadMiB int) hostCgroupLimits {
	lim := hostCgroupLimits{memoryBytes: int64(memMiB+uint64(max(overheadMiB, 0))) << 20}
	if spec.Linux != nil && spec.Linux.Resources != nil {
		if cpu := spec.Linux.Resources.CPU; cpu != nil && cpu.Quota != nil && *cpu.Quota > 0 && cpu.Period != nil && *cpu.Period > 0 {
			lim.cpuPeriod = *cpu.Period
			lim.cpuQuota = int64(cpus) * int64(*cpu.Period)
		}
	}
	return lim
}

// ensureInitExits stops the VM if the init has not exited
// limits.agent_call_timeout after a SIGKILL the guest acknowledged: a
// guest that says yes and does nothing must not keep the task running.
func (c *Container) ensureInitExits() {
	d := c.callTimeout()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.init.exited:
		return
	case <-c.stopping:
		return
	case <-c.sb.vm.Done():
		return
	case <-t.C:
	}
	c.stopVM(fmt.Sprintf("the container's init did not exit within %s of SIGKILL (limits.agent_call_timeout)", d))
}
