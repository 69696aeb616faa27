package runtime

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
)

// Pausing stops the VM's vCPUs, so every process of the container is
// paused at once, as a frozen cgroup is with runc.

// Pause stops the VM's vCPUs, if the init's state allows. Only the owner
// of a pod pauses it: one container of a CRI pod cannot be paused alone.
func (c *Container) Pause(ctx context.Context) error {
	if c.pod.owner != c {
		return fmt.Errorf("pause %s: pausing one container of a pod would pause its whole VM; pause the pod's sandbox %s: %w", c.ID, c.pod.id, errdefs.ErrNotImplemented)
	}
	p := c.init
	p.opMu.Lock()
	defer p.unlockOps()
	next, err := c.initState().pause(ctx, p)
	if err != nil {
		return err
	}
	p.setState(next)
	return nil
}

// Resume lets a paused VM run again.
func (c *Container) Resume(ctx context.Context) error {
	p := c.init
	p.opMu.Lock()
	defer p.unlockOps()
	next, err := c.initState().resume(ctx, p)
	if err != nil {
		return err
	}
	p.setState(next)
	return nil
}

// resumeForSignal resumes a paused container, so that the guest can act
// on a signal; a container that is not paused is left as it is.
func (c *Container) resumeForSignal(ctx context.Context) error {
	p := c.init
	p.opMu.Lock()
	defer p.unlockOps()
	st := c.initState()
	if st.status() != StatusPaused {
		return nil
	}
	next, err := st.resume(ctx, p)
	if err != nil {
		return err
	}
	p.setState(next)
	return nil
}

// pauseVM stops the VM's vCPUs.
func (c *Container) pauseVM(ctx context.Context) error {
	if err := c.pod.sb.vm.Pause(ctx); err != nil {
		return fmt.Errorf("pause %s: %w", c.ID, err)
	}
	return nil
}

// resumeVM lets the VM's vCPUs run again.
func (c *Container) resumeVM(ctx context.Context) error {
	if err := c.pod.sb.vm.Resume(ctx); err != nil {
		return fmt.Errorf("resume %s: %w", c.ID, err)
	}
	return nil
}
