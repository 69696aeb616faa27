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
