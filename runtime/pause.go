package runtime

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
)

// Pausing stops the VM's vCPUs, so every process of the container is
// paused at once, as a frozen cgroup is with runc.

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
