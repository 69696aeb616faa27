package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/config"
	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/oci"
	"github.com/earendil-works/gondolin-containerd/policy"
	"github.com/earendil-works/gondolin-containerd/vmm"
	"github.com/earendil-works/gondolin-containerd/vmm/vmpool"
)

// The VM pool (vm_pool_size): a process of its own, one per runtime
// config, keeps VMs started and idle, and a container's create takes one
// instead of starting its own, when the container is one the pool's VMs
// fit: a container of its own (not a CRI pod's), in a network namespace
// of its own that the shim makes. A pool VM is made as a CRI pod's sandbox
// VM is, ready to take a root it has not seen yet:
//
//   - its one share is a pod share (podshare.go): the container's root and
//     binds are bound into it once the container is created;
//   - its VMM runs in a new, empty network namespace, which becomes the
//     container's (the hooks find it through the VMM's pid, as always);
//   - its console and NIC connections are accepted by the pool and handed
//     over with pidfds of its processes, never read before.
//
// The shim renames the VM's sockets and pod share into its state
// directory and records the VM's processes with the directory their
// command lines name (hoststate.go's VMDir); from then on the VM is the
// container's as if it had started it. Nothing of a VM is ever handed to a
// second container: the pool only hands out VMs no container has run in.

// vmPoolPaths are the directory and socket of the VM pool of cfg: one per
// runtime config and shim binary, so that a shim never takes a VM another
// config or version started.
func vmPoolPaths(stateRoot string, cfg *config.Config) (dir, socket string, err error) {
	exe, err := os.Executable()
	if err != nil {
		return "", "", err
	}
	st, err := os.Stat(exe)
	if err != nil {
		return "", "", err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return "", "", err
	}
	h := sha256.New()
	h.Write(b)
	fmt.Fprintf(h, "\x00%s\x00%d\x00%d", exe, st.Size(), st.ModTime().UnixNano())
	key := hex.EncodeToString(h.Sum(nil)[:12])
	base := filepath.Join(stateRoot, "vm-pool")
	return filepath.Join(base, key), filepath.Join(base, key+".sock"), nil
}

// VMPoolCommand is the shim binary's argument that runs a VM pool.
const VMPoolCommand = "vm-pool"

// ServeVMPool runs the VM pool of cfg on socket (which must be the one
// vmPoolPaths gives: a config changed since the shim that started the pool
// read it is refused) until ctx ends or the pool has been idle for
// vm_pool_idle. Another pool already serving the socket is no error.
func ServeVMPool(ctx context.Context, cfg *config.Config, stateRoot, socket string, prime ...vmpool.Shape) error {
	if cfg.VMPoolSize == 0 {
		return errors.New("vm_pool_size = 0: the VM pool is off")
	}
	dir, want, err := vmPoolPaths(stateRoot, cfg)
	if err != nil {
		return err
	}
	if socket != want {
		return fmt.Errorf("VM pool socket %s is not this config's (%s): the runtime config or the shim changed since the pool was asked for", socket, want)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	l, release, err := vmpool.Listen(socket)
	if errors.Is(err, vmpool.ErrRunning) {
		return nil
	}
	if err != nil {
		return err
	}
	defer release()
	removeStalePoolVMs(ctx, dir)
	setups := vmSetups{cfg: cfg}
	setup, err := setups.get(ctx)
	if err != nil {
		return err
	}
	// The pool's VMs outlive the pool (the shims that take them over
	// watch them), so its file servers and VMMs get no parent-death
	// signal.
	fsd := *setup.virtiofsd
	fsd.Detached = true
	poolSetup := *setup
	poolSetup.virtiofsd = &fsd
	starter := poolStarter{cfg: cfg, setup: &poolSetup}
	srv := &vmpool.Server{Dir: dir, Size: cfg.VMPoolSize, Start: starter.start, ShapeIdle: cfg.VMPoolIdle.Duration, Exit: cfg.VMPoolIdle.Duration}
	log.G(ctx).WithFields(log.Fields{"socket": socket, "size": cfg.VMPoolSize}).Info("vm pool: serving")
	err = srv.Serve(ctx, l, prime...)
	// Empty once its VMs are stopped (a VM directory kept because its
	// share could not be detached keeps it too). The lock file stays: a
	// pool starting meanwhile may hold it open.
	_ = os.Remove(dir)
	log.G(ctx).Info("vm pool: exited")
	return err
}

// removeStalePoolVMs stops and removes the VMs a pool that died left in
// dir: nobody can take them over any more.
func removeStalePoolVMs(ctx context.Context, dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "vm-") {
			continue
		}
		vmDir := filepath.Join(dir, e.Name())
		// A VM handed over has left its directory (its sockets are in
		// its container's state directory): its processes are a
		// container's, never the pool's to stop.
		if _, err := os.Lstat(filepath.Join(vmDir, "qmp.sock")); err != nil {
			if err := removePoolVMDir(vmDir); err != nil {
				log.G(ctx).WithError(err).WithField("dir", vmDir).Warn("vm pool: remove a handed-over VM's directory")
			}
			continue
		}
		for _, pid := range pidsNaming(vmDir + "/") {
			if err := killIfOurs(pid, vmDir+"/"); err != nil {
				log.G(ctx).WithError(err).Warn("vm pool: stop a stale VM")
			}
		}
		if err := removePoolVMDir(vmDir); err != nil {
			log.G(ctx).WithError(err).WithField("dir", vmDir).Warn("vm pool: remove a stale VM's directory")
		}
	}
}

// pidsNaming lists the processes whose command line contains s.
func pidsNaming(s string) []int {
	procs, _ := os.ReadDir("/proc")
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline")); err == nil && strings.Contains(string(b), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// removePoolVMDir removes a pool VM's directory, its pod share first; it
// is kept if the share cannot be detached.
func removePoolVMDir(dir string) error {
	podDir := filepath.Join(dir, podShareName)
	if _, err := os.Lstat(podDir); err == nil {
		if err := removePodShare(podDir); err != nil {
			return err
		}
	}
	return os.RemoveAll(dir)
}

// poolStarter starts the pool's VMs.
type poolStarter struct {
	cfg   *config.Config
	setup *vmSetup
}

// handTimeout bounds the wait for the VMM's console and NIC connections.
const handTimeout = 10 * time.Second

// start starts a VM of shape in dir: a pod share, listeners for its
// console and NIC, the VM in a new network namespace, and the two
// connections it made.
func (ps poolStarter) start(ctx context.Context, shape vmpool.Shape, dir string) (_ *vmpool.VM, retErr error) {
	podDir := filepath.Join(dir, podShareName)
	var inst *vmm.Instance
	var files []*os.File
	stop := func(ctx context.Context) {
		if inst != nil {
			_ = inst.VM.Stop(ctx, 0)
			for _, fs := range inst.FileServers {
				fs.Stop()
			}
		}
		if err := removePoolVMDir(dir); err != nil {
			log.G(ctx).WithError(err).WithField("dir", dir).Warn("vm pool: remove a VM's directory")
		}
	}
	defer func() {
		if retErr != nil {
			closeAll(files)
			stop(context.WithoutCancel(ctx))
		}
	}()
	export, err := preparePodShare(podDir)
	if err != nil {
		return nil, err
	}
	consoleL, err := listenUnix(filepath.Join(dir, "console.sock"))
	if err != nil {
		return nil, err
	}
	defer consoleL.Close()
	var nic *vmm.NIC
	var nicL *net.UnixListener
	if shape.NIC {
		mac, mtu := policy.GuestNIC()
		nic = &vmm.NIC{Socket: filepath.Join(dir, "net.sock"), MAC: mac, MTU: mtu}
		if nicL, err = listenUnix(nic.Socket); err != nil {
			return nil, err
		}
		defer nicL.Close()
	}
	req := vmRequest(sandboxConfig{
		id:        "pool-" + strings.TrimPrefix(filepath.Base(dir), "vm-"),
		stateDir:  dir,
		shares:    []share{{tag: api.PodTag, dir: export, submounts: true}},
		console:   filepath.Join(dir, "console.log"),
		memoryMiB: shape.MemoryMiB,
		cpus:      shape.CPUs,
		runtime:   ps.cfg,
		setup:     ps.setup,
		nic:       nic,
	}, newPhases())
	req.Config.Detached = true
	req.Hooks = vmm.Hooks{Run: runInNewNetNS}
	if inst, err = vmm.Start(ctx, req); err != nil {
		return nil, err
	}
	// The VMM connected its console and NIC as it started.
	for _, l := range []*net.UnixListener{consoleL, nicL} {
		if l == nil {
			continue
		}
		f, err := acceptFile(l, handTimeout)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	if err := ps.warmUp(ctx, dir, podDir, inst); err != nil {
		return nil, fmt.Errorf("warm up the VM: %w", err)
	}
	return &vmpool.VM{Dir: dir, Instance: inst, Files: files, Stop: stop}, nil
}

// poolWarmUpID is the trusted container a pool VM creates and deletes
// before any container of a user's runs in it.
const poolWarmUpID = "gondolin-pool-warm-up"

// warmUp gets a pool VM ready as far as it can go without its container:
// the agent answers, the guest has its clock and entropy (a resumed VM),
// and a trusted container has been created and deleted in it, so that the
// create path is translated (under TCG a guest's first create costs ~0.2 s
// of translation) and the guest has mounted the pod share. The warm-up's
// root is a small tmpfs of the pool's in the pod share, gone before the VM
// is handed over. Last, the host's session with the agent ends and the
// agent waits for the next host, the shim that takes the VM over.
func (ps poolStarter) warmUp(ctx context.Context, dir, podDir string, inst *vmm.Instance) (retErr error) {
	handOff, ok := inst.VM.(vmm.ChannelHandOff)
	if !ok {
		return errors.New("this VMM cannot hand its agent channel over")
	}
	entry := podEntry(podDir, poolWarmUpID)
	rootfs := filepath.Join(entry, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("gondolin-warm-up", rootfs, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m,nr_inodes=256"); err != nil {
		return fmt.Errorf("mount the warm-up root: %w", err)
	}
	defer func() {
		if err := detachAndRemove(rootfs); err != nil {
			retErr = errors.Join(retErr, err)
			return
		}
		retErr = errors.Join(retErr, os.Remove(entry))
	}()
	// The init is created, never started: its program need not run.
	if err := os.WriteFile(filepath.Join(rootfs, "warm-up"), nil, 0o755); err != nil {
		return err
	}
	spec := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{Args: []string{"/warm-up"}, Cwd: "/", Env: []string{"PATH=/"}},
		Root:    &specs.Root{Path: "rootfs"},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}}},
	}
	g, err := oci.NewGuestContainer(poolWarmUpID, spec, oci.Pod{})
	if err != nil {
		return err
	}
	sb := &sandbox{id: poolWarmUpID, stateDir: dir, console: filepath.Join(dir, "console.log"), accel: ps.setup.accel,
		vm: inst.VM, fs: inst.FileServers, restored: inst.Restored}
	if err := sb.connectAgent(ctx, sandboxConfig{id: poolWarmUpID, stateDir: dir, runtime: ps.cfg}, newPhases()); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, ps.cfg.Limits.AgentCallTimeout.Duration)
	defer cancel()
	req := g.Request(oci.GuestSetup{Pod: &oci.PodPlacement{ShareTag: api.PodTag, Dir: poolWarmUpID}})
	_, err = sb.agent.CreateContainer(cctx, req)
	if err == nil {
		// The warm-up took the init the snapshot's agent prestarted:
		// the container that gets the VM gets another.
		_, err = sb.agent.DeleteContainer(cctx, &api.DeleteContainerRequest{ContainerId: poolWarmUpID, PrestartNext: true})
	}
	if err != nil {
		sb.agent.Close()
		return fmt.Errorf("agent: %w", agentError(err))
	}
	return handOff.HandOffChannel(cctx, sb.agent.Close)
}

func listenUnix(path string) (*net.UnixListener, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return l, nil
}

// acceptFile accepts one connection on l within timeout, as a file.
func acceptFile(l *net.UnixListener, timeout time.Duration) (*os.File, error) {
	_ = l.SetDeadline(time.Now().Add(timeout))
	conn, err := l.AcceptUnix()
	if err != nil {
		return nil, fmt.Errorf("the VMM did not connect to %s: %w", l.Addr(), err)
	}
	defer conn.Close()
	return conn.File()
}

// runInNewNetNS runs start on a thread in a new, empty network namespace,
// which the processes start starts stay in. The thread is never given back
// to the scheduler: the goroutine exits locked, so Go ends the thread.
func runInNewNetNS(start func() error) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare a network namespace for a pool VM: %w", err)
			return
		}
		errc <- start()
	}()
	return <-errc
}

func closeAll(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// pooledVM is a VM a create took from the pool, until its sandbox owns it.
type pooledVM struct {
	vm       vmm.VM
	fs       []*vmm.FileServer
	restored bool
	// console and nic are the VMM's connections (nic nil without a NIC).
	console, nic *os.File
	// adopted: the sandbox owns vm and fs.
	adopted bool
}

// poolFits says whether the container can take a pool VM: the pool is on,
// the container is not a CRI pod's, and it gets a new network namespace
// (the pool VM's).
func (cr *creation) poolFits() bool {
	if cr.r.cfg.Runtime.VMPoolSize == 0 || cr.place.Role != oci.Standalone {
		return false
	}
	spec := cr.c.spec
	if spec.Linux == nil {
		return false
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path == ""
		}
	}
	return false
}

// claimPooledVM takes a VM of the container's shape from the VM pool, if
// the pool has one idle, and starts the pool if it is not running. Without
// one the create starts its own VM, as with the pool off.
func (cr *creation) claimPooledVM(ctx context.Context) (undoFunc, error) {
	if !cr.poolFits() {
		return nil, nil
	}
	rt := cr.r.cfg.Runtime
	dir, socket, err := vmPoolPaths(cr.r.cfg.StateRoot, rt)
	if err != nil {
		log.G(ctx).WithError(err).Warn("vm pool: not used")
		return nil, nil
	}
	shape := vmpool.Shape{MemoryMiB: cr.memoryMiB, CPUs: cr.cpus, NIC: cr.settings.Mode != policy.NetModeNone}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	claimed, err := vmpool.Claim(cctx, socket, shape)
	cancel()
	switch {
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
		cr.r.startVMPool(ctx, socket, shape)
		return nil, nil
	case err != nil:
		log.G(ctx).WithError(err).Warn("vm pool: no VM from it")
		return nil, nil
	case claimed == nil:
		return nil, nil
	}
	pv, err := cr.takeOver(dir, claimed)
	if err == nil {
		err = claimed.Accept()
	}
	if err != nil {
		claimed.Reject()
		if pv != nil {
			pv.close()
		}
		return nil, fmt.Errorf("take over a VM from the VM pool: %w", err)
	}
	cr.pooled = pv
	return func(context.Context) error {
		if !pv.adopted {
			pv.close()
		}
		return nil
	}, nil
}

// takeOver makes a claimed VM the container's: its processes recorded,
// its sockets and pod share moved into the state directory, its processes
// adopted through their pidfds.
func (cr *creation) takeOver(poolDir string, cl *vmpool.Claimed) (*pooledVM, error) {
	if filepath.Dir(cl.Dir) != poolDir || !strings.HasPrefix(filepath.Base(cl.Dir), "vm-") {
		return nil, fmt.Errorf("VM directory %s is not in the pool's %s", cl.Dir, poolDir)
	}
	fsSocket := "fs-" + api.PodTag + ".sock"
	if len(cl.FileServers) != 1 || filepath.Base(cl.FileServers[0].Socket) != fsSocket {
		return nil, fmt.Errorf("the pool's VM has file servers %v: want one, %s", cl.FileServers, fsSocket)
	}
	if want := 1 + btoi(cr.settings.Mode != policy.NetModeNone); len(cl.Files) != want {
		return nil, fmt.Errorf("the pool's VM came with %d connections, want %d", len(cl.Files), want)
	}
	h := cr.c.host
	// Recorded first: whatever happens next, the container's cleanup
	// stops these processes.
	if err := h.recordPooledVM(cl.Dir, cl.VMMPid, []int{cl.FileServers[0].Pid}); err != nil {
		return nil, err
	}
	podDir, err := h.recordPodShare()
	if err != nil {
		return nil, err
	}
	if err := os.Rename(filepath.Join(cl.Dir, podShareName), podDir); err != nil {
		return nil, fmt.Errorf("move the pool VM's pod share: %w", err)
	}
	for _, name := range []string{"qmp.sock", channelName, fsSocket, fsSocket + ".pid"} {
		err := os.Rename(filepath.Join(cl.Dir, name), h.path(name))
		// The Rust virtiofsd's pid file beside its socket; the C one has
		// none.
		if errors.Is(err, os.ErrNotExist) && strings.HasSuffix(name, ".pid") {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("move the pool VM's %s: %w", name, err)
		}
	}
	if err := os.Remove(cl.Dir); err != nil {
		log.L.WithError(err).WithField("dir", cl.Dir).Warn("vm pool: remove a VM's directory once taken over")
	}
	vm, err := cr.setup.backend.Adopt(vmm.Adopted{
		Pid: cl.VMMPid, Pidfd: cl.VMMPidfd, StateDir: h.dir,
		ConsoleLog: filepath.Join(cr.opts.Bundle, "console.log"),
	})
	if err != nil {
		return nil, err
	}
	fs := vmm.AdoptFileServer(cl.FileServers[0].Pid, cl.FileServerPidfds[0], h.path(fsSocket))
	// The file server's sandboxed child too.
	if err := h.recordFileServers(fs.Pids()); err != nil {
		return nil, err
	}
	pv := &pooledVM{vm: vm, fs: []*vmm.FileServer{fs}, restored: cl.Restored, console: cl.Files[0]}
	if len(cl.Files) > 1 {
		pv.nic = cl.Files[1]
	}
	return pv, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// close stops a pooled VM no sandbox took.
func (pv *pooledVM) close() {
	_ = pv.vm.Stop(context.Background(), 0)
	for _, fs := range pv.fs {
		fs.Stop()
	}
	closeAll([]*os.File{pv.console, pv.nic})
}

// startVMPool starts the VM pool process for the next creates, without
// waiting for it.
func (r *Runtime) startVMPool(ctx context.Context, socket string, first vmpool.Shape) {
	exe, err := os.Executable()
	if err == nil {
		err = os.MkdirAll(filepath.Dir(socket), 0o700)
	}
	if err == nil {
		argv := []string{exe, VMPoolCommand, "--socket", socket, "--state-root", r.cfg.StateRoot, "--shape", first.Key()}
		if r.cfg.ConfigPath != "" {
			argv = append(argv, "--config", r.cfg.ConfigPath)
		}
		err = vmpool.Spawn(argv, strings.TrimSuffix(socket, ".sock")+".log")
	}
	if err != nil {
		log.G(ctx).WithError(err).Warn("vm pool: start it")
		return
	}
	log.G(ctx).WithField("socket", socket).Info("vm pool: started")
}

// pinPooledNetNS makes the pooled VM's network namespace the container's,
// pinned at pinPath as one the shim created.
func pinPooledNetNS(pinPath string, pv *pooledVM) (*netNS, error) {
	return pinNetNS(pinPath, func() error {
		src := fmt.Sprintf("/proc/%d/ns/net", pv.vm.Pid())
		if err := unix.Mount(src, pinPath, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pin the pool VM's network namespace %s: %w", src, err)
		}
		// Pinned while the VMM (watched through its pidfd) still ran:
		// the PID was its.
		select {
		case <-pv.vm.Done():
			return errors.New("the pool VM exited as its network namespace was pinned")
		default:
			return nil
		}
	})
}

// adoptSandbox makes a pooled VM the container's sandbox: its console
// read into the container's log, its processes moved into the
// container's host cgroup, and its agent connected.
func adoptSandbox(ctx context.Context, cfg sandboxConfig, pv *pooledVM) (_ *sandbox, retErr error) {
	timing := newPhases()
	sb := &sandbox{id: cfg.id, stateDir: cfg.stateDir, console: cfg.console, accel: cfg.setup.accel,
		vm: pv.vm, fs: pv.fs, restored: pv.restored, pooled: true}
	pv.adopted = true
	defer func() {
		if retErr != nil {
			sb.stop(ctx, 0)
		}
	}()
	conn, err := net.FileConn(pv.console)
	pv.console.Close()
	if err != nil {
		return nil, fmt.Errorf("the pool VM's console: %w", err)
	}
	if sb.consoleLog, err = openConsoleLog(cfg.id, cfg.console, filepath.Join(cfg.stateDir, "console.sock"), cfg.runtime.Limits.ConsoleLogBytes, conn); err != nil {
		conn.Close()
		return nil, err
	}
	// Pages the VM touched in the pool stay charged where they were
	// (the pool's cgroup); what it uses from now on is the container's.
	if cfg.cgroup != nil {
		if err := cfg.cgroup.add(pv.vm.Pid()); err != nil {
			return nil, err
		}
		for _, fs := range pv.fs {
			if err := addFileServer(cfg.cgroup, fs); err != nil {
				return nil, err
			}
		}
	}
	timing.done("adopt")
	if err := sb.connectAgent(ctx, cfg, timing); err != nil {
		return nil, err
	}
	return sb, nil
}

// attachPooledNIC hands the pooled VM's NIC connection to the container's
// network, whose guest settings must be those the pool VM was started
// with.
func attachPooledNIC(network *sandboxNetwork, pv *pooledVM) error {
	if (network == nil) != (pv.nic == nil) {
		return fmt.Errorf("the pool VM's NIC (%v) does not match the container's network (%v)", pv.nic != nil, network != nil)
	}
	if network == nil {
		return nil
	}
	mac, mtu := policy.GuestNIC()
	if nic := network.nic(); nic.MAC.String() != mac.String() || nic.MTU != mtu {
		return fmt.Errorf("the pool VM's NIC (%s, MTU %d) is not the container's (%s, MTU %d)", mac, mtu, nic.MAC, nic.MTU)
	}
	conn, err := net.FileConn(pv.nic)
	pv.nic.Close()
	pv.nic = nil
	if err != nil {
		return fmt.Errorf("the pool VM's NIC connection: %w", err)
	}
	return network.policy.AttachStream(conn)
}
