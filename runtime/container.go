package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

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

// Container is a container running in its own sandbox.
type Container struct {
	ID     string
	Bundle string
	rt     *Runtime
	sb     *sandbox
	init   *Process

	// stopping is closed when Delete tears the sandbox down on purpose.
	stopping     chan struct{}
	stoppingOnce sync.Once
	cleanup      func(context.Context) error
}

// Create boots a sandbox for the container and prepares its init process,
// which waits for Start. On error nothing is left behind.
func (r *Runtime) Create(ctx context.Context, opts CreateOpts) (_ *Container, retErr error) {
	if _, err := r.Get(opts.ID); err == nil {
		return nil, fmt.Errorf("container %s: %w", opts.ID, errdefs.ErrAlreadyExists)
	}
	spec, err := oci.ReadSpec(opts.Bundle)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	settings, err := oci.ParseAnnotations(spec.Annotations, r.cfg.Runtime)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	req, err := oci.GuestContainer(opts.ID, spec)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	memMiB, cpus := oci.VMResources(spec, settings, r.cfg.Runtime)

	stateDir := StateDir(r.cfg.StateRoot, r.cfg.Namespace, opts.ID)
	// A directory left by a shim that died is cleaned before reuse.
	if err := Cleanup(ctx, r.cfg.StateRoot, r.cfg.Namespace, opts.ID); err != nil {
		return nil, fmt.Errorf("clean stale state: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	st := &persistedState{Bundle: opts.Bundle}
	c := &Container{ID: opts.ID, Bundle: opts.Bundle, rt: r, stopping: make(chan struct{})}
	var undo []func()
	defer func() {
		if retErr != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
			_ = os.RemoveAll(stateDir)
		}
	}()

	rootfs := filepath.Join(opts.Bundle, "rootfs")
	if len(opts.Rootfs) > 0 {
		if err := os.MkdirAll(rootfs, 0o711); err != nil {
			return nil, fmt.Errorf("create rootfs mountpoint: %w", err)
		}
		if err := mount.All(opts.Rootfs, rootfs); err != nil {
			return nil, fmt.Errorf("mount container rootfs: %w", err)
		}
		st.RootfsMounted = rootfs
		undo = append(undo, func() { _ = unmountRootfs(rootfs) })
		if err := writeState(stateDir, st); err != nil {
			return nil, err
		}
	} else if spec.Root != nil && spec.Root.Path != "" {
		rootfs = spec.Root.Path
		if !filepath.IsAbs(rootfs) {
			rootfs = filepath.Join(opts.Bundle, rootfs)
		}
	}

	sb, err := startSandbox(ctx, sandboxConfig{
		id:        opts.ID,
		stateDir:  stateDir,
		sharedDir: rootfs,
		console:   filepath.Join(opts.Bundle, "console.log"),
		memoryMiB: memMiB,
		cpus:      cpus,
		runtime:   r.cfg.Runtime,
	}, st)
	if err != nil {
		return nil, err
	}
	c.sb = sb
	undo = append(undo, func() { sb.stop(context.WithoutCancel(ctx), 0) })

	hio, err := openHostIO(ctx, opts.ID, r.cfg.Namespace, opts.Stdio)
	if err != nil {
		return nil, err
	}
	undo = append(undo, hio.Close)
	c.init = newProcess(c, "", opts.Stdio, hio)
	if req.Stdio, err = c.init.attachStdio(sb.agent); err != nil {
		return nil, err
	}
	if _, err := sb.agent.CreateContainer(ctx, req); err != nil {
		return nil, fmt.Errorf("create container in the guest: %w", err)
	}
	go c.init.wait(sb.agent)
	go c.watchVM()

	c.cleanup = func(ctx context.Context) error {
		c.stoppingOnce.Do(func() { close(c.stopping) })
		sb.stop(ctx, 3*time.Second)
		hio.Close()
		var errs []error
		if st.RootfsMounted != "" {
			errs = append(errs, unmountRootfs(st.RootfsMounted))
		}
		errs = append(errs, os.RemoveAll(stateDir))
		return errors.Join(errs...)
	}
	r.mu.Lock()
	r.containers[opts.ID] = c
	r.mu.Unlock()
	return c, nil
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
}

func (c *Container) pid() uint32 {
	if c.sb == nil || c.sb.vm == nil {
		return 0
	}
	return uint32(c.sb.vm.Pid())
}

// Accelerator is how the container's VM runs (kvm or tcg).
func (c *Container) Accelerator() string { return string(c.sb.accel) }

// Process returns the init process (execID "") or an exec.
func (c *Container) Process(execID string) (*Process, error) {
	if execID == "" {
		return c.init, nil
	}
	return nil, fmt.Errorf("exec %s in %s: %w", execID, c.ID, errdefs.ErrNotFound)
}

// Start lets the init process run.
func (c *Container) Start(ctx context.Context) (uint32, error) {
	p := c.init
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status != StatusCreated {
		return 0, fmt.Errorf("container %s is %s, not created: %w", c.ID, p.status, errdefs.ErrFailedPrecondition)
	}
	if _, err := c.sb.agent.StartProcess(ctx, &api.StartProcessRequest{ContainerId: c.ID}); err != nil {
		return 0, fmt.Errorf("start %s: %w", c.ID, err)
	}
	p.status = StatusRunning
	return c.pid(), nil
}

// Delete removes the container once its init process has stopped (or never
// started): the VM, its file server, mounts and state go with it.
func (c *Container) Delete(ctx context.Context) (Exit, error) {
	p := c.init
	st := p.State()
	if st.Status == StatusRunning {
		return Exit{}, fmt.Errorf("container %s is running; stop it first: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	if st.Status == StatusCreated {
		// Never started: end it as runc does, killed.
		p.setExited(128+uint32(unix.SIGKILL), time.Now())
	}
	err := c.cleanup(ctx)
	c.rt.remove(c.ID)
	exit, _ := p.Wait(ctx)
	if err != nil {
		return exit, fmt.Errorf("delete %s: %w", c.ID, err)
	}
	return exit, nil
}

func unmountRootfs(target string) error {
	if err := mount.UnmountRecursive(target, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount rootfs %s: %w", target, err)
	}
	return nil
}

// State reports a process's state; the init process for execID "".
func (c *Container) State(execID string) State {
	p, err := c.Process(execID)
	if err != nil {
		return State{}
	}
	return p.State()
}
