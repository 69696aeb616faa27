package runtime

import (
	"context"
	"fmt"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Delete ends a container whose init has stopped (or never started): its
// VM goes, then what the shim holds for it, then what the host state
// records (hoststate.go), then its poststop hooks run.

// Delete removes the container once its init has stopped or if it never
// started, as the init's state decides: the VM, its file servers, mounts
// and state go with it.
func (c *Container) Delete(ctx context.Context) (Exit, error) {
	p := c.init
	p.opMu.Lock()
	next, err := c.initState().delete(p)
	if err == nil {
		p.setState(next)
	}
	p.unlockOps()
	if err != nil {
		return Exit{}, err
	}
	err = c.teardown(ctx)
	if hooks := c.spec.Hooks; hooks != nil && len(hooks.Poststop) > 0 {
		if state, herr := c.hookState(specs.StateStopped); herr == nil {
			runHooksLogged(ctx, "poststop", hooks.Poststop, state)
		}
	}
	// The VM is gone: an exec whose exit its wait has not recorded yet
	// (its output still being copied) is recorded killed now, so that
	// nothing waits on it forever.
	c.mu.Lock()
	execs := make([]*Process, 0, len(c.execs))
	for _, e := range c.execs {
		if e != nil {
			execs = append(execs, e)
		}
	}
	c.mu.Unlock()
	for _, e := range execs {
		e.setExited(killedStatus, time.Now())
		e.io.Close()
	}
	c.rt.remove(c.ID)
	exit, _ := p.Wait(ctx)
	if err != nil {
		return exit, fmt.Errorf("delete %s: %w", c.ID, err)
	}
	return exit, nil
}

// teardown ends the container's VM and releases everything made for it:
// what the shim holds, then, through the host state, what it made on the
// host. It runs to its end even when the client gives up on the call: a
// half-done one leaves processes and mounts behind.
func (c *Container) teardown(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	c.stoppingOnce.Do(func() { close(c.stopping) })
	c.pod.leave(c)
	c.pod.stop(ctx)
	c.init.io.Close()
	c.pod.releaseNetwork(ctx)
	return c.host.cleanup()
}
