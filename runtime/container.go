package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// Container is a container in a pod's VM: its root file system, binds,
// init and execs. What the VM needs (its network, host cgroup, watchers)
// belongs to its pod; a container created on its own is a pod of one.
type Container struct {
	ID     string
	Bundle string
	rt     *Runtime
	pod    *pod
	spec   *specs.Spec
	init   *Process
	// host is the container's host-side state, whose cleanup undoes
	// everything made on the host for it. The pod's owner shares it with
	// its pod.
	host *hostState

	// mu guards execs.
	mu    sync.Mutex
	execs map[string]*Process

	// stopping is closed when Delete removes the container on purpose.
	stopping     chan struct{}
	stoppingOnce sync.Once
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
		c.pod.stopVM(fmt.Sprintf("%s: the guest did not answer within %s (limits.agent_call_timeout)", what, d))
		return fmt.Errorf("%s: the guest did not answer within %s (limits.agent_call_timeout); its VM was stopped: %w", what, d, errdefs.ErrUnavailable)
	}
	return err
}

// pid is the task's pid: its pod's VMM.
func (c *Container) pid() uint32 { return uint32(c.pod.vmmPid()) }

// paused says the container's VM is paused.
func (c *Container) paused() bool { return c.pod.paused() }

// initState is the state of the container's init, on which the
// container's operations dispatch.
func (c *Container) initState() initState {
	return c.init.current().(initState)
}

// Accelerator is how the container's VM runs (kvm or tcg).
func (c *Container) Accelerator() string { return string(c.pod.sb.accel) }

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

// runningContext is cancelled when the container is deleted or its VM
// goes away, for the work that follows a running container.
func (c *Container) runningContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-c.stopping:
		case <-c.pod.sb.vm.Done():
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}

// hookState is the container's state for its hooks.
func (c *Container) hookState(status specs.ContainerState) ([]byte, error) {
	return hookState(c.spec, c.ID, c.Bundle, status, c.pod.vmmPid())
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
		resp, err = c.pod.sb.agent.ListProcesses(ctx, &api.ListProcessesRequest{ContainerId: c.ID})
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

// Update changes the container's resource limits inside the guest. The VM
// itself keeps the memory and vCPUs it booted with.
func (c *Container) Update(ctx context.Context, res *specs.LinuxResources) error {
	if res == nil {
		return nil
	}
	if m := res.Memory; m != nil && m.Limit != nil && *m.Limit > 0 && uint64(*m.Limit)>>20 > c.pod.memoryMiB {
		return fmt.Errorf("memory limit of %d MiB exceeds the %d MiB the VM of %s was booted with; the VM size is fixed at create (set io.gondolin.vm.memory or a larger limit at create): %w",
			uint64(*m.Limit)>>20, c.pod.memoryMiB, c.ID, errdefs.ErrInvalidArgument)
	}
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode resources: %w", err)
	}
	if err := c.guestCall(ctx, "update resources", func(ctx context.Context) error {
		_, err := c.pod.sb.agent.UpdateContainer(ctx, &api.UpdateContainerRequest{ContainerId: c.ID, ResourcesJson: b})
		return err
	}); err != nil {
		return fmt.Errorf("update %s: %w", c.ID, agentError(err))
	}
	return nil
}
