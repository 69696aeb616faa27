package runtime

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// The container's start: its startContainer hooks, its NIC configured from
// its network namespace (and followed from then on, netwatch.go), its init
// let run in the guest, then its poststart hooks.

// Start starts the container: its init's state does it (startInit) or
// refuses.
func (c *Container) Start(ctx context.Context) (uint32, error) {
	return c.init.Start(ctx)
}

// startInit starts a created container and lets its init run.
func (c *Container) startInit(ctx context.Context) (uint32, error) {
	timing := newPhases()
	hooks := c.spec.Hooks
	if hooks != nil && len(hooks.StartContainer) > 0 {
		state, err := c.hookState(specs.StateCreated)
		if err != nil {
			return 0, err
		}
		if err := runHooks(ctx, "startContainer", hooks.StartContainer, state); err != nil {
			return 0, fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
		}
	}
	timing.done("hooks")
	// The VM's network is its pod's: its owner configures it, and the
	// ports its guest listens on are published for the pod from then on.
	if c.pod.owner == c {
		if err := c.configureNetwork(ctx); err != nil {
			return 0, err
		}
		timing.done("network")
	}
	pid, err := c.init.startInGuest(ctx)
	if err != nil {
		return 0, err
	}
	timing.done("guest_start")
	log.G(ctx).WithFields(timing.fields).WithField("container", c.ID).Debug("container started")
	if hooks != nil && len(hooks.Poststart) > 0 {
		if state, err := c.hookState(specs.StateRunning); err == nil {
			runHooksLogged(ctx, "poststart", hooks.Poststart, state)
		}
	}
	return pid, nil
}

// configureNetwork gives the guest its NIC's configuration from the
// container's network namespace, just before the init runs, and follows
// the namespace's changes afterwards: Docker (26 and later) configures the
// namespace after the task is created, so at create time it may still be
// empty, and docker network connect changes it while the container runs.
// An empty namespace at start (docker --network none, a plain ctr run)
// means no NIC at all, as with runc.
func (c *Container) configureNetwork(ctx context.Context) (retErr error) {
	network := c.pod.net
	if network == nil {
		return nil
	}
	// Subscribe before reading, so no change falls between the two.
	entry := log.G(ctx).WithField("container", c.ID)
	watch, err := c.pod.netns.watch(entry)
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil && watch != nil {
			watch.Close()
		}
	}()
	link, err := c.pod.netns.link()
	if err != nil {
		return fmt.Errorf("read the container's network namespace: %w", err)
	}
	if link.empty {
		if watch != nil {
			watch.Close()
		}
		if err := c.guestCall(ctx, "detach the guest's NIC", func(ctx context.Context) error {
			_, err := c.pod.sb.agent.ConfigureNetwork(ctx, &api.ConfigureNetworkRequest{Mac: network.guestConfig().Mac, Detach: true})
			return err
		}); err != nil {
			return fmt.Errorf("detach the guest's NIC: %w", agentError(err))
		}
		return nil
	}
	if err := c.applyNetwork(ctx, link); err != nil {
		return err
	}
	if watch != nil {
		go func() {
			runCtx, cancel := c.runningContext()
			defer cancel()
			c.followNetNS(log.WithLogger(runCtx, entry), watch, link)
		}()
	}
	go c.publishListeners()
	return nil
}

// applyNetwork gives the guest the addresses its namespace has. The guest
// takes the address its namespace was given, so that what the container
// sees matches what Docker or Kubernetes report.
func (c *Container) applyNetwork(ctx context.Context, link nsLink) error {
	if link.ok {
		if err := c.pod.net.policy.SetLinkAddresses(link.addr, link.gateway); err != nil {
			return err
		}
	}
	req := c.pod.net.guestConfig()
	for _, p := range link.extra {
		req.ExtraAddresses = append(req.ExtraAddresses, p.String())
	}
	if err := c.guestCall(ctx, "configure the guest's network", func(ctx context.Context) error {
		_, err := c.pod.sb.agent.ConfigureNetwork(ctx, req)
		return err
	}); err != nil {
		return fmt.Errorf("configure the guest's network: %w", agentError(err))
	}
	return nil
}
