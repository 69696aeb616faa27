package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/oci"
)

// CreateOpts is what containerd gives to create a container.
type CreateOpts struct {
	ID     string
	Bundle string
	// Rootfs are the snapshot mounts; empty when the bundle's rootfs
	// directory is already populated.
	Rootfs []mount.Mount
	Stdio  Stdio
}

// Create prepares a container whose init waits for Start: the owner of a
// new pod, which boots the pod's VM (a container of its own, or a CRI pod's
// sandbox), or a CRI pod's container, which joins the VM its sandbox
// booted. The create is a list of steps, in order: each registers its undo
// once it has succeeded, and a step that fails undoes, in reverse, what the
// steps before it made. The state directory's undo, the host state's
// cleanup, comes last: it also undoes whatever a failed step recorded and
// had begun to make. On error nothing is left behind.
func (r *Runtime) Create(ctx context.Context, opts CreateOpts) (*Container, error) {
	if _, err := r.Get(opts.ID); err == nil {
		return nil, fmt.Errorf("container %s: %w", opts.ID, errdefs.ErrAlreadyExists)
	}
	c := &Container{
		ID: opts.ID, Bundle: opts.Bundle, rt: r,
		execs: map[string]*Process{}, stopping: make(chan struct{}),
	}
	cr := &creation{r: r, opts: opts, c: c}
	timing := newPhases()
	if err := runSteps(ctx, timing, []step{{"parse the bundle", "parse", cr.parseBundle}}); err != nil {
		return nil, err
	}
	steps := cr.ownerSteps()
	if cr.place.Role == oci.PodContainer {
		steps = cr.memberSteps()
	}
	if err := runSteps(ctx, timing, steps); err != nil {
		return nil, err
	}
	log.G(ctx).WithFields(timing.fields).WithField("container", c.ID).Debug("container created")
	if c.pod.owner == c {
		c.pod.join(c)
		c.pod.start(cr.shares)
		r.addPod(c.pod)
	}
	c.startWatchers()
	r.mu.Lock()
	r.containers[c.ID] = c
	r.mu.Unlock()
	return c, nil
}

// ownerSteps create a container that makes its pod and boots its VM.
func (cr *creation) ownerSteps() []step {
	cr.c.pod = newPod(cr.r, cr.c)
	return []step{
		// A host that cannot run a VM fails the create before anything
		// is mounted.
		{"VM setup", "vm_setup", cr.vmSetup},
		{"state directory", "state", cr.stateDirectory},
		{"rootfs", "rootfs", cr.mountRootfs},
		{"read-only root", "readonly_root", cr.readonlyRoot},
		{"bind mounts", "binds", cr.binds},
		// Before the pod share: a pool VM comes with one.
		{"VM from the pool", "pool_claim", cr.claimPooledVM},
		// A CRI pod's sandbox: the share its pod's containers come
		// through, its own root and binds the first of them.
		{"pod share", "pod_share", cr.podShare},
		// Before any process of the VM: QEMU and the virtiofsds join it
		// as they start.
		{"host cgroup", "host_cgroup", cr.hostCgroup},
		// Before the VM: the VMM runs in it (so that hooks find it
		// through the VMM's pid) and egress is dialled from it.
		{"network namespace", "netns", cr.netns},
		{"network", "network", cr.network},
		{"VM", "boot", cr.vm},
		{"create hooks", "hooks", cr.createHooks},
		{"stdio", "stdio", cr.stdio},
		{"create in the guest", "guest_create", cr.guestCreate},
		{"seal the read-only root", "seal", cr.sealRoot},
	}
}

// creation is one create in progress: what its steps found and made, for
// the steps after them. The Container's fields are filled in as it goes.
type creation struct {
	r    *Runtime
	opts CreateOpts
	c    *Container
	// place is where the container belongs: a pod of its own, or a CRI
	// pod's sandbox or container.
	place oci.Pod
	// join are the sandbox's namespaces a pod's container joins.
	join []string

	settings *oci.Settings
	guest    *oci.GuestContainer
	// memoryMiB and cpus size a new pod's VM.
	memoryMiB uint64
	cpus      uint32
	setup     *vmSetup
	// rootfs is the container's root file system on the host.
	rootfs string
	// shares are what the VM's file servers export; the first is the
	// container's root until a CRI pod's share replaces them all.
	shares []share
	// bindsDir is the container's binds share on the host; "" without
	// host binds.
	bindsDir string
	// sealDir is the read-only root's overlay, sealed once the guest has
	// created the container; "" for a writable root.
	sealDir string
	// initStdio names the init's streams the host opened.
	initStdio *api.Stdio
	// pooled is the VM taken from the VM pool (vmpool.go), nil when the
	// create starts its own.
	pooled *pooledVM
}

// parseBundle reads and validates the bundle: spec, annotations, the
// guest's view of the container, the VM's size.
func (cr *creation) parseBundle(ctx context.Context) (undoFunc, error) {
	invalid := func(err error) (undoFunc, error) {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	cfg := cr.r.cfg.Runtime
	spec, err := oci.ReadSpec(cr.opts.Bundle)
	if err != nil {
		return invalid(err)
	}
	if cr.place, err = oci.ParsePod(cr.opts.ID, spec.Annotations); err != nil {
		return invalid(err)
	}
	if cr.place.Role == oci.PodSandbox {
		if err := oci.CheckPodSandbox(spec); err != nil {
			return invalid(err)
		}
	}
	if cr.settings, err = oci.ParseAnnotations(spec.Annotations, cfg.Operator()); err != nil {
		return invalid(err)
	}
	if cr.guest, err = oci.NewGuestContainer(cr.opts.ID, spec, cr.place); err != nil {
		return invalid(err)
	}
	if cr.place.Role != oci.PodContainer {
		if cr.memoryMiB, cr.cpus, err = oci.VMResources(spec, cr.settings, cfg.VMDefaults()); err != nil {
			return invalid(err)
		}
	}
	if devs := oci.HostDevices(spec); len(devs) > 0 {
		log.G(ctx).WithField("container", cr.opts.ID).Warnf("host devices are not available inside the VM; the container will not have %s", strings.Join(devs, ", "))
	}
	cr.c.spec = spec
	return nil, nil
}

// vmSetup gets the runtime's VMM, file server and accelerator.
func (cr *creation) vmSetup(ctx context.Context) (_ undoFunc, err error) {
	cr.setup, err = cr.r.vms.get(ctx)
	return nil, err
}

// stateDirectory starts the container's host state in its state directory.
func (cr *creation) stateDirectory(ctx context.Context) (undoFunc, error) {
	h, err := newHostState(ctx, cr.r.cfg.StateRoot, cr.r.cfg.Namespace, cr.opts.ID, cr.opts.Bundle)
	if err != nil {
		return nil, err
	}
	cr.c.host, cr.c.pod.host = h, h
	cr.c.pod.memoryMiB, cr.c.pod.cpus = cr.memoryMiB, cr.cpus
	return func(context.Context) error { return h.cleanup() }, nil
}

// mountRootfs mounts the snapshot on the bundle's rootfs, or finds the
// rootfs the spec names when containerd gave no mounts.
func (cr *creation) mountRootfs(context.Context) (undoFunc, error) {
	rootfs := filepath.Join(cr.opts.Bundle, "rootfs")
	if len(cr.opts.Rootfs) == 0 {
		if root := cr.c.spec.Root; root != nil && root.Path != "" {
			rootfs = root.Path
			if !filepath.IsAbs(rootfs) {
				rootfs = filepath.Join(cr.opts.Bundle, rootfs)
			}
		}
		cr.setRoot(rootfs)
		return nil, nil
	}
	if err := os.MkdirAll(rootfs, 0o711); err != nil {
		return nil, fmt.Errorf("create rootfs mountpoint: %w", err)
	}
	// Recorded first: a crash mid-mount still gets unmounted.
	if err := cr.c.host.recordRootfs(rootfs); err != nil {
		return nil, err
	}
	if err := mount.All(cr.opts.Rootfs, rootfs); err != nil {
		return nil, fmt.Errorf("mount container rootfs: %w", err)
	}
	cr.setRoot(rootfs)
	return func(context.Context) error { return cr.c.host.releaseRootfs() }, nil
}

// setRoot makes rootfs the container's root, shared as the first share.
func (cr *creation) setRoot(rootfs string) {
	cr.rootfs = rootfs
	cr.shares = []share{{tag: api.RootfsTag, dir: rootfs}}
}

// readonlyRoot serves a read-only root read-only on the host (roroot.go),
// through an overlay sealed once the guest has created the container.
func (cr *creation) readonlyRoot(context.Context) (undoFunc, error) {
	if !oci.ReadonlyRoot(cr.c.spec) {
		return nil, nil
	}
	h := cr.c.host
	overlay, err := h.recordReadonlyRoot() // recorded first: a crash mid-mount still gets unmounted
	if err != nil {
		return nil, err
	}
	dir, err := prepareReadonlyRoot(overlay, cr.rootfs)
	if err != nil {
		return nil, err
	}
	cr.shares[0].dir, cr.sealDir = dir, dir
	return func(context.Context) error { return h.releaseReadonlyRoot() }, nil
}

// binds makes the binds share with the container's host bind mounts.
func (cr *creation) binds(context.Context) (undoFunc, error) {
	if len(cr.guest.Binds) == 0 {
		return nil, nil
	}
	h := cr.c.host
	dir, err := h.recordBinds()
	if err != nil {
		return nil, err
	}
	if err := prepareBinds(dir, cr.guest.Binds); err != nil {
		return nil, err
	}
	cr.shares = append(cr.shares, share{tag: api.BindsTag, dir: dir})
	cr.bindsDir = dir
	return func(context.Context) error { return h.releaseBinds() }, nil
}

// hostCgroup joins or creates the container's host cgroup
// (linux.cgroupsPath), with the VM's limits.
func (cr *creation) hostCgroup(context.Context) (undoFunc, error) {
	spec := cr.c.spec
	if spec.Linux == nil || spec.Linux.CgroupsPath == "" {
		return nil, nil
	}
	lim := vmCgroupLimits(spec, cr.c.pod.memoryMiB, cr.c.pod.cpus, cr.r.cfg.Runtime.Limits.HostMemoryOverheadMiB)
	cg, err := openHostCgroup(spec.Linux.CgroupsPath, lim)
	if err != nil {
		return nil, err
	}
	cr.c.pod.cgroup = cg
	if !cg.created {
		return nil, nil
	}
	// Recorded before any process joins it: a shim that dies still gets
	// it removed. Its undo runs after the VM's (undos run in reverse):
	// the cgroup must be empty to go.
	h := cr.c.host
	if err := h.recordHostCgroup(cg.path); err != nil {
		return nil, err
	}
	return func(context.Context) error { return h.releaseHostCgroup() }, nil
}

// netns opens the spec's network namespace, or creates and pins one.
func (cr *creation) netns(context.Context) (undoFunc, error) {
	pin, err := cr.c.host.recordNetNSPin() // recorded first: a crash mid-create still unpins it
	if err != nil {
		return nil, err
	}
	var ns *netNS
	if cr.pooled != nil {
		ns, err = pinPooledNetNS(pin, cr.pooled)
	} else {
		ns, err = specNetNS(cr.c.spec, pin)
	}
	if err != nil {
		return nil, err
	}
	cr.c.pod.netns = ns
	return func(context.Context) error { return ns.Close() }, nil
}

// network builds the container's policy network for the guest's NIC. Even
// a namespace the shim created, with no hook, may be configured after
// create: Docker does it through the task's pid (the VMM's), so the VM
// always gets a NIC, which Start takes away again if the namespace is
// still empty then.
func (cr *creation) network(ctx context.Context) (undoFunc, error) {
	r := cr.r
	network, err := startNetwork(ctx, networkParams{
		id:        cr.opts.ID,
		namespace: r.cfg.Namespace,
		stateDir:  cr.c.host.dir,
		caDir:     filepath.Join(r.cfg.StateRoot, "ca"),
		spec:      cr.c.spec,
		settings:  cr.settings,
		runtime:   r.cfg.Runtime,
		ns:        cr.c.pod.netns,
	})
	if err != nil {
		return nil, err
	}
	if cr.pooled != nil {
		if err := attachPooledNIC(network, cr.pooled); err != nil {
			if network != nil {
				network.Close()
			}
			return nil, err
		}
	}
	cr.c.pod.net = network
	return func(context.Context) error { return network.Close() }, nil
}

// vm boots the VM (sandbox.go) and waits for its agent.
func (cr *creation) vm(ctx context.Context) (undoFunc, error) {
	p := cr.c.pod
	start := startSandbox
	if cr.pooled != nil {
		start = func(ctx context.Context, cfg sandboxConfig) (*sandbox, error) {
			return adoptSandbox(ctx, cfg, cr.pooled)
		}
	}
	sb, err := start(ctx, sandboxConfig{
		id:        cr.opts.ID,
		stateDir:  p.host.dir,
		shares:    cr.shares,
		console:   filepath.Join(cr.opts.Bundle, "console.log"),
		memoryMiB: p.memoryMiB,
		cpus:      p.cpus,
		runtime:   cr.r.cfg.Runtime,
		setup:     cr.setup,
		nic:       p.net.nic(),
		netns:     p.netns,
		cgroup:    p.cgroup,
		host:      p.host,
	})
	if err != nil {
		return nil, err
	}
	p.sb = sb
	return func(ctx context.Context) error {
		sb.stop(ctx, 0)
		return nil
	}, nil
}

// createHooks runs prestart (deprecated, run as runc runs it),
// createRuntime and createContainer: the namespace exists and the VMM
// lives in it.
func (cr *creation) createHooks(ctx context.Context) (undoFunc, error) {
	hooks := cr.c.spec.Hooks
	if hooks == nil {
		return nil, nil
	}
	state, err := cr.c.hookState(specs.StateCreating)
	if err != nil {
		return nil, err
	}
	// What the hooks set up (nerdctl's CNI network: addresses, rules) is
	// theirs to take down: a create that fails once they have run runs the
	// poststop hooks, as runc does, so nothing of it is left.
	poststop := func(ctx context.Context) error {
		if len(hooks.Poststop) == 0 {
			return nil
		}
		if st, err := cr.c.hookState(specs.StateStopped); err == nil {
			runHooksLogged(ctx, "poststop", hooks.Poststop, st)
		}
		return nil
	}
	for _, stage := range []struct {
		name  string
		hooks []specs.Hook
	}{{"prestart", hooks.Prestart}, {"createRuntime", hooks.CreateRuntime}, {"createContainer", hooks.CreateContainer}} {
		if err := runHooks(ctx, stage.name, stage.hooks, state); err != nil {
			_ = poststop(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
		}
	}
	return poststop, nil
}

// stdio opens the init's stdio on the host and its streams to the guest.
func (cr *creation) stdio(ctx context.Context) (undoFunc, error) {
	c := cr.c
	hio, err := openHostIO(ctx, cr.opts.ID, cr.r.cfg.Namespace, cr.opts.Stdio)
	if err != nil {
		return nil, err
	}
	c.init = newProcess(c, "", cr.opts.Stdio, hio)
	if cr.initStdio, err = c.init.attachStdio(c.pod.sb.agent); err != nil {
		hio.Close()
		return nil, err
	}
	return func(context.Context) error {
		hio.Close()
		return nil
	}, nil
}

// guestCreate creates the container in the guest, its init waiting for
// Start. Nothing to undo: stopping the VM ends it.
func (cr *creation) guestCreate(ctx context.Context) (undoFunc, error) {
	c, p := cr.c, cr.c.pod
	if p.owner == c {
		p.placeholders = p.net.placeholders(cr.settings)
	}
	setup := guestSetup(p.net, p.placeholders, cr.initStdio)
	if cr.place.Role != oci.Standalone || cr.pooled != nil {
		setup.Pod = &oci.PodPlacement{ShareTag: api.PodTag, Dir: cr.opts.ID, Join: cr.join}
		if len(cr.join) > 0 {
			setup.Pod.JoinContainer = cr.place.SandboxID
		}
	}
	req := cr.guest.Request(setup)
	cctx, cancel := context.WithTimeout(ctx, cr.r.cfg.Runtime.Limits.AgentCallTimeout.Duration)
	defer cancel()
	resp, err := p.sb.agent.CreateContainer(cctx, req)
	if err != nil {
		return nil, processStartError("create", "agent", err)
	}
	c.init.guestPid = resp.Pid
	return nil, nil
}

// guestSetup is what the guest's create request takes from the container's
// network (nil for none) and its init's stdio.
func guestSetup(network *sandboxNetwork, placeholders map[string]string, stdio *api.Stdio) oci.GuestSetup {
	setup := oci.GuestSetup{Placeholders: placeholders, Stdio: stdio}
	if network != nil {
		setup.ExtraCAPEM = network.policy.CACertPEM()
		setup.ResolvConf = network.resolvConf()
	}
	return setup
}

// sealRoot makes a read-only root read-only on the host, now that the
// guest has made its mount points, before any of the container's code
// has run.
func (cr *creation) sealRoot(context.Context) (undoFunc, error) {
	if cr.sealDir == "" {
		return nil, nil
	}
	return nil, sealReadonlyRoot(cr.sealDir)
}
