package runtime

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/oci"
)

// Execs are more processes in the container: each is prepared with its
// own stdio (Exec), started like the init (Process.Start) and deleted once
// stopped (DeleteExec), through the guest agent.

// Exec prepares another process in the container, if its init's state
// allows; Start runs it.
func (c *Container) Exec(ctx context.Context, execID string, spec *specs.Process, stdio Stdio) (*Process, error) {
	if execID == "" {
		return nil, fmt.Errorf("an exec needs an ID: %w", errdefs.ErrInvalidArgument)
	}
	return c.initState().exec(ctx, c.init, execRequest{id: execID, spec: spec, stdio: stdio})
}

// addExec creates the exec in the guest, waiting for Start.
func (c *Container) addExec(ctx context.Context, req execRequest) (_ *Process, retErr error) {
	execID, stdio := req.id, req.stdio
	proc, err := oci.GuestProcess(req.spec, c.pod.placeholders)
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
			w, err := p.attachStdio(c.pod.sb.agent)
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
		_, err := c.pod.sb.agent.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: c.ID, ExecId: execID, Process: proc, Stdio: want})
		return err
	}); err != nil {
		p.CloseStdin()
		hio.Close()
		return nil, processStartError("exec", "exec in "+c.ID, err)
	}
	go p.wait(c.pod.sb.agent)
	c.mu.Lock()
	c.execs[execID] = p
	c.mu.Unlock()
	return p, nil
}

// DeleteExec removes an exec that has stopped or never started, if its
// state allows.
func (c *Container) DeleteExec(ctx context.Context, execID string) (Exit, error) {
	if execID == "" {
		return Exit{}, fmt.Errorf("delete exec: no exec ID (the init goes with Delete): %w", errdefs.ErrInvalidArgument)
	}
	p, err := c.Process(execID)
	if err != nil {
		return Exit{}, err
	}
	return p.current().(execState).deleteExec(ctx, p)
}

// removeExec forgets the exec in the guest, waits for its exit and removes
// it from the container.
func (c *Container) removeExec(ctx context.Context, p *Process) (Exit, error) {
	execID := p.execID
	select {
	case <-c.pod.sb.vm.Done():
		// Nothing is left in the guest to forget it.
	default:
		if err := c.guestCall(ctx, "delete exec "+execID, func(ctx context.Context) error {
			_, err := c.pod.sb.agent.DeleteProcess(ctx, &api.DeleteProcessRequest{ContainerId: c.ID, ExecId: execID})
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
	// Stopped (its exit is recorded), so nothing else moves it on.
	p.setState(deletedState{})
	return exit, nil
}
