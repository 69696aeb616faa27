package runtime

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
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
	p := c.pod
	p.leave(c)
	if p.owner != c {
		return c.leavePod(ctx)
	}
	// The pod's other containers' processes are reported killed as the
	// VM goes, and their host state is cleaned up with the pod's.
	p.stop(ctx)
	c.rt.removePod(p)
	c.init.io.Close()
	p.releaseNetwork(ctx)
	return c.host.cleanup()
}

// leavePod deletes a CRI pod's container from the VM, which goes on
// running for the rest of the pod, and releases what the host made for
// it.
func (c *Container) leavePod(ctx context.Context) error {
	p := c.pod
	if !p.stopped() && !p.sb.vmGone() {
		err := c.guestCall(ctx, "delete the container in the guest", func(ctx context.Context) error {
			_, err := p.sb.agent.DeleteContainer(ctx, &api.DeleteContainerRequest{ContainerId: c.ID})
			return err
		})
		if err != nil {
			// Its processes have exited; what the guest keeps of it goes
			// with the VM.
			log.G(ctx).WithError(agentError(err)).WithField("container", c.ID).Warn("delete the container in the guest")
		}
	}
	c.init.io.Close()
	if err := c.host.cleanup(); err != nil {
		return err
	}
	if p.stopped() {
		return nil // the pod's cleanup has forgotten it already
	}
	return p.host.dropMember(c.host.dir)
}
