package runtime

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/earendil-works/gondolin-containerd/config"
	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/vmm"
)

// sandbox is one VM: the VMM, its file server and the agent channel.
type sandbox struct {
	id       string
	stateDir string
	console  string
	accel    vmm.Accelerator
	vm       vmm.VM
	fs       []*vmm.FileServer
	agent    *agentConn
	info     *api.InfoResponse
	// restored says the VM resumed from a snapshot instead of booting.
	restored bool
	// pooled says the VM came from the VM pool, started before its
	// container was created.
	pooled bool
	// consoleLog writes the guest console to console, capped.
	consoleLog *consoleLog
}

type sandboxConfig struct {
	id       string
	stateDir string
	// shares are exported over virtio-fs, one file server each.
	shares    []share
	console   string
	memoryMiB uint64
	cpus      uint32
	runtime   *config.Config
	// setup is the runtime's VMM, file server and accelerator.
	setup *vmSetup
	// nic is the VM's network interface; nil for none.
	nic *vmm.NIC
	// netns is the network namespace the VMM runs in.
	netns *netNS
	// cgroup is the container's host cgroup, which the VMM and the file
	// servers join as they start; nil for none.
	cgroup *hostCgroup
	// host records the VM's processes as they start.
	host *hostState
}

// share is a host directory the guest mounts by tag.
type share struct {
	tag string
	dir string
	// submounts: file systems are mounted below dir, some while the VM
	// runs (a pod's share).
	submounts bool
}

// startSandbox boots a VM sharing cfg.sharedDir as the container's root and
// waits until its agent answers. On error nothing of it is left running.
func startSandbox(ctx context.Context, cfg sandboxConfig) (_ *sandbox, retErr error) {
	timing := newPhases()
	sb := &sandbox{id: cfg.id, stateDir: cfg.stateDir, console: cfg.console, accel: cfg.setup.accel}
	defer func() {
		if retErr != nil {
			sb.stop(ctx, 0)
		}
	}()

	if err := sb.startVM(ctx, cfg, timing); err != nil {
		return nil, err
	}
	if err := sb.connectAgent(ctx, cfg, timing); err != nil {
		return nil, err
	}
	return sb, nil
}

// connectAgent connects to the agent of the VM that started, waits until
// it answers and, for a resumed VM, gives it the time and fresh entropy.
func (sb *sandbox) connectAgent(ctx context.Context, cfg sandboxConfig, timing *phases) error {
	bootCtx, cancel := context.WithTimeout(ctx, cfg.runtime.BootTimeout.Duration)
	defer cancel()
	agent, err := dialAgent(bootCtx, filepath.Join(cfg.stateDir, channelName), sb.vm.Done())
	if err != nil {
		return sb.bootError(sb.vmExitCause(fmt.Errorf("connect to the guest agent: %w", err)))
	}
	sb.agent = agent
	timing.done("channel")
	info, err := sb.waitReady(bootCtx)
	if err != nil {
		return sb.bootError(err)
	}
	sb.info = info
	timing.done("agent_info")
	if sb.restored {
		if err := sb.tellRestored(bootCtx); err != nil {
			return sb.bootError(sb.vmExitCause(err))
		}
		timing.done("restored")
	}
	// guest_ready_ms is the guest's own uptime when its agent was ready
	// (for a resumed VM that was the snapshot's boot, so it is left out);
	// the *_ms fields are the host's steps up to the agent's first answer.
	fields := log.Fields{"container": cfg.id, "kernel": info.KernelRelease, "agent": info.AgentVersion, "boot": sb.bootKind()}
	if !sb.restored && !sb.pooled {
		fields["guest_ready_ms"] = info.ReadyMs
	}
	log.G(ctx).WithFields(timing.fields).WithFields(fields).Info("guest agent ready")
	return nil
}

// channelName is the agent channel's socket in the state directory.
const channelName = "channel.sock"

// startVM starts the VM of cfg through vmm, resumed from a snapshot when
// the runtime config allows it, and records its processes in cfg.host.
func (sb *sandbox) startVM(ctx context.Context, cfg sandboxConfig, timing *phases) error {
	req := vmRequest(cfg, timing)
	var err error
	// The console goes through the shim, which caps the log; a VM saved
	// as a snapshot (no container in it) writes its own.
	if sb.consoleLog, err = openConsoleLog(cfg.id, cfg.console, req.Config.ConsoleSocket, cfg.runtime.Limits.ConsoleLogBytes, nil); err != nil {
		return err
	}
	inst, err := vmm.Start(ctx, req)
	if err != nil {
		return err
	}
	sb.vm, sb.fs, sb.restored = inst.VM, inst.FileServers, inst.Restored
	return cfg.host.recordVMM(inst.VM.Pid())
}

// vmRequest is the VM of cfg as vmm starts it: its configuration, the
// runtime's backend and file server, and its hooks.
func vmRequest(cfg sandboxConfig, timing *phases) vmm.Request {
	vmCfg := vmm.Config{
		ID:            cfg.id,
		StateDir:      cfg.stateDir,
		Kernel:        cfg.runtime.KernelPath,
		Initrd:        cfg.runtime.InitrdPath,
		MemoryMiB:     cfg.memoryMiB,
		CPUs:          cfg.cpus,
		Accelerator:   cfg.setup.accel,
		Machine:       vmm.Machine(cfg.runtime.Machine),
		ConsoleLog:    cfg.console,
		ConsoleSocket: filepath.Join(cfg.stateDir, "console.sock"),
		ChannelSocket: filepath.Join(cfg.stateDir, channelName),
		ChannelName:   api.ChannelPortName,
		NIC:           cfg.nic,
	}
	var dirs []string
	for _, sh := range cfg.shares {
		vmCfg.Shares = append(vmCfg.Shares, vmm.Share{Tag: sh.tag, Socket: filepath.Join(cfg.stateDir, "fs-"+sh.tag+".sock"), Submounts: sh.submounts})
		dirs = append(dirs, sh.dir)
	}
	if lvl := cfg.runtime.LogLevel; lvl == "debug" || lvl == "trace" {
		vmCfg.KernelArgs = append(vmCfg.KernelArgs, api.DebugKernelArg)
	}
	// The VMM joins the container's host cgroup before it fills guest RAM
	// (the kernel, or a saved state): a page stays charged to the cgroup
	// that first touched it.
	if cfg.cgroup != nil {
		vmCfg.Started = cfg.cgroup.add
	}
	req := vmm.Request{
		Backend:   cfg.setup.backend,
		Virtiofsd: cfg.setup.virtiofsd,
		Config:    vmCfg,
		Dirs:      dirs,
		Hooks:     vmHooks(cfg, timing),
	}
	if mode := cfg.runtime.SnapshotBoot; mode != config.SnapshotBootOff {
		// The VMs saved and resumed have the snapshot argument (the
		// agent prepares the first create before it is saved); a VM
		// booted instead has not.
		req.Snapshot = &vmm.SnapshotBoot{
			Dir:        cfg.runtime.SnapshotDir,
			Required:   mode == config.SnapshotBootOn,
			KernelArgs: []string{api.SnapshotKernelArg},
		}
	}
	return req
}

// vmHooks put the VM's processes into the container's host cgroup and
// network namespace as they start, and record them in cfg.host.
func vmHooks(cfg sandboxConfig, timing *phases) vmm.Hooks {
	return vmm.Hooks{
		FileServer: func(fs *vmm.FileServer) error { return addFileServer(cfg.cgroup, fs) },
		// The file servers' PIDs are recorded before the VMM starts, for
		// a `shim delete` after this shim died.
		FileServers: func(fss []*vmm.FileServer) error {
			pids := make([]int, 0, len(fss))
			for _, fs := range fss {
				pids = append(pids, fs.Pid())
			}
			return cfg.host.recordFileServers(pids)
		},
		// The VMM is started from inside the container's network
		// namespace and stays there: its PID is what OCI hooks get to
		// find the namespace. Its own sockets are path-bound unix
		// sockets, which work from any network namespace.
		Run:   cfg.netns.do,
		Phase: timing.done,
	}
}

// vmExitWait is how long a failed agent call waits for the VMM to exit,
// whose error then explains the failure better than a closed channel.
const vmExitWait = time.Second

// waitReady asks the agent for its info; the request waits in the channel
// until the guest has booted far enough to answer.
func (sb *sandbox) waitReady(ctx context.Context) (*api.InfoResponse, error) {
	type result struct {
		info *api.InfoResponse
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		for {
			info, err := sb.agent.Info(ctx, &api.Empty{})
			// The agent answers Unavailable while it is still setting up.
			if err != nil && errdefs.IsUnavailable(agentError(err)) && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			ch <- result{info, err}
			return
		}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, sb.vmExitCause(fmt.Errorf("guest agent did not answer: %w", r.err))
		}
		return r.info, nil
	case <-sb.vm.Done():
		return nil, fmt.Errorf("VM exited while booting: %v", sb.vm.ExitError())
	case <-ctx.Done():
		return nil, fmt.Errorf("guest agent not ready within the boot timeout: %w", ctx.Err())
	}
}

// vmExitCause explains a failed talk with the agent during boot: a VMM that
// dies then (a kernel it cannot load) closes the channel before its exit is
// seen, and its own error says more than the closed channel. It waits up to
// vmExitWait for the VMM to exit and returns err if it does not.
func (sb *sandbox) vmExitCause(err error) error {
	select {
	case <-sb.vm.Done():
		return fmt.Errorf("VM exited while booting: %v", sb.vm.ExitError())
	case <-time.After(vmExitWait):
		return err
	}
}

// bootError adds the end of the guest console to err.
func (sb *sandbox) bootError(err error) error {
	return fmt.Errorf("%w; last lines of the guest console (%s):\n%s", err, sb.console, vmm.TailLines(sb.console, 15))
}

// stop ends the VM: a clean agent shutdown when it still answers within
// grace, then the VMM, then the file servers. It is bounded whatever the
// guest does: grace for the agent, stopKillWait for the VMM to go after
// SIGKILL, then 500 ms per file server.
func (sb *sandbox) stop(ctx context.Context, grace time.Duration) {
	timing := newPhases()
	if sb.agent != nil && grace > 0 && !sb.vmGone() {
		sctx, cancel := context.WithTimeout(ctx, grace)
		if _, err := sb.agent.Shutdown(sctx, &api.Empty{}); err != nil {
			log.G(ctx).WithError(err).Debug("agent shutdown")
		}
		cancel()
	}
	// After a shutdown the agent answered, nothing in the guest is left
	// to lose (every process is gone and the guest's file systems are
	// synced to the host), so QEMU is killed: neither the guest kernel's
	// own shutdown (~0.13 s under TCG) nor QEMU's quit (13-24 ms here,
	// against 4-8 ms for SIGKILL) is worth waiting for. After one it did
	// not answer within grace, the guest will not power off by itself
	// either.
	timing.done("agent_shutdown")
	if sb.vm != nil {
		kctx, cancel := context.WithTimeout(ctx, stopKillWait)
		if err := sb.vm.Kill(kctx); err != nil {
			log.G(ctx).WithError(err).Warn("stop VM")
		}
		cancel()
	}
	timing.done("vm_stop")
	if sb.agent != nil {
		sb.agent.Close()
	}
	for _, fs := range sb.fs {
		fs.Stop()
	}
	if sb.consoleLog != nil {
		sb.consoleLog.Close()
	}
	timing.done("fs_stop")
	log.G(ctx).WithFields(timing.fields).Debug("sandbox stopped")
}

// stopKillWait bounds the wait for a killed VMM to be gone (a process in
// uninterruptible sleep exits only when that ends).
const stopKillWait = 3 * time.Second

// vmGone says the VMM has exited.
func (sb *sandbox) vmGone() bool {
	if sb.vm == nil {
		return true
	}
	select {
	case <-sb.vm.Done():
		return true
	default:
		return false
	}
}

// addFileServer puts a file server's processes into the host cgroup: the
// one started and, sandboxed, the child it serves from, which it may have
// forked before the shim moved it (a child stays where it was forked).
// The parent goes first and its children are listed after that, so none
// forked in between is missed: one forked later is born in the cgroup. A
// child gone meanwhile is no error; its parent then exits, which ends the
// VM anyway.
func addFileServer(cg *hostCgroup, fs *vmm.FileServer) error {
	if cg == nil {
		return nil
	}
	if err := cg.add(fs.Pid()); err != nil {
		return err
	}
	for _, pid := range fs.Pids() {
		if pid == fs.Pid() {
			continue
		}
		if err := cg.add(pid); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
	}
	return nil
}

// tellRestored gives a guest resumed from a snapshot the time and fresh
// entropy (api.RestoredRequest).
func (sb *sandbox) tellRestored(ctx context.Context) error {
	entropy := make([]byte, 64)
	if _, err := rand.Read(entropy); err != nil {
		return err
	}
	_, err := sb.agent.Restored(ctx, &api.RestoredRequest{UnixNanos: time.Now().UnixNano(), Entropy: entropy})
	if err != nil {
		return fmt.Errorf("agent: set the clock and entropy of the resumed VM: %w", agentError(err))
	}
	return nil
}

// bootKind names how the VM came up, for the log.
func (sb *sandbox) bootKind() string {
	if sb.pooled {
		return "pool"
	}
	if sb.restored {
		return "snapshot"
	}
	return "cold"
}
