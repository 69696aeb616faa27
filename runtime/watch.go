package runtime

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/log"
	"golang.org/x/time/rate"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/vmm"
)

// The watchers turn what goes wrong under a running container into exits
// and events: a VMM or a file server that dies, an agent that stops
// answering, a SIGKILL the guest does not act on, the guest kernel's OOM
// kills. A dead helper or a wedged guest ends the task; it never hangs it.

// startWatchers follows the created container's init until it exits.
func (c *Container) startWatchers() {
	go c.init.wait(c.pod.sb.agent)
}

// watchVM turns a VMM that dies under the pod into process exits.
func (p *pod) watchVM() {
	select {
	case <-p.stopping:
		return
	case <-p.sb.vm.Done():
	}
	log.L.WithField("pod", p.id).WithError(p.sb.vm.ExitError()).Error("VM exited unexpectedly")
	// Closing the channel fails the agent calls that wait for exits, which
	// then report the processes as killed.
	p.sb.agent.Close()
	// The file servers have nothing left to serve.
	for _, fs := range p.sb.fs {
		fs.Stop()
	}
}

// watchFileServer turns a virtiofsd that dies under the pod (killed,
// crashed) into the end of its tasks: the guest's file system is gone, so
// the VM is stopped, which reports every process as killed.
func (p *pod) watchFileServer(tag string, fs *vmm.FileServer) {
	select {
	case <-p.stopping:
		return
	case <-p.sb.vm.Done():
		return
	case <-fs.Done():
	}
	select {
	case <-p.stopping:
		return
	default:
	}
	p.stopVM(fmt.Sprintf("virtiofsd of share %q (pid %d) exited: %s", tag, fs.Pid(), fs.Stderr()))
}

// stopVM ends the VM for good (once) because it cannot go on: a helper
// died or the guest stopped answering. watchVM then reports the processes
// killed. QEMU gets a moment to quit over QMP, which a wedged QEMU does not
// answer, and is killed after that.
func (p *pod) stopVM(reason string) {
	p.vmStopOnce.Do(func() {
		log.L.WithField("pod", p.id).Errorf("%s: stopping the VM", reason)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := p.sb.vm.Stop(ctx, 0); err != nil {
			log.L.WithError(err).WithField("pod", p.id).Warn("stop VM")
		}
	})
}

// Agent liveness: a guest whose agent stops answering (a wedged kernel, a
// VMM stuck outside QMP) must become an exit, not a hang.
const (
	heartbeatInterval = 5 * time.Second
	heartbeatTimeout  = 5 * time.Second
	heartbeatMisses   = 3
)

// watchAgent pings the agent while the VM runs; after heartbeatMisses
// missed answers in a row it kills the VM, which ends the processes.
func (p *pod) watchAgent() {
	misses := 0
	tick := time.NewTicker(heartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-p.stopping:
			return
		case <-p.sb.vm.Done():
			return
		case <-tick.C:
		}
		if p.paused() {
			misses = 0
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), heartbeatTimeout)
		_, err := p.sb.agent.Info(ctx, &api.Empty{})
		cancel()
		if err == nil || p.paused() {
			misses = 0
			continue
		}
		misses++
		log.L.WithError(err).WithField("pod", p.id).Warnf("guest agent did not answer (%d/%d)", misses, heartbeatMisses)
		if misses >= heartbeatMisses {
			p.stopVM(fmt.Sprintf("guest agent missed %d heartbeats in a row", heartbeatMisses))
			return
		}
	}
}

// watchOOM reports the guest kernel's OOM kills in the pod's containers,
// at most limits.guest_events_per_second of them: the guest may send as
// many as it likes, and each becomes an event containerd stores and
// forwards. Only a container of the pod is reported: the guest names it.
func (p *pod) watchOOM() {
	ctx, cancel := p.runningContext()
	defer cancel()
	relayOOM(ctx, p.id, p.rt.cfg.Runtime.Limits.GuestEventsPerSecond, func(ctx context.Context) (string, error) {
		ev, err := p.sb.agent.WaitOOM(ctx, &api.Empty{})
		return ev.GetContainerId(), err
	}, func(id string) {
		if _, ok := p.member(id); ok {
			p.rt.cfg.OnOOM(id)
		}
	})
}

// relayOOM asks the guest for OOM events with wait until ctx ends and
// publishes them, naming the container the guest gave, no more than
// perSecond a second (with a burst of as many): past that it does not ask
// the guest again until the rate allows, so a flood costs the host neither
// events nor CPU. podID names the pod in the log.
func relayOOM(ctx context.Context, podID string, perSecond int, wait func(context.Context) (string, error), publish func(containerID string)) {
	limiter := rate.NewLimiter(rate.Limit(perSecond), perSecond)
	var throttled bool
	for {
		if !limiter.Allow() {
			if !throttled {
				log.L.WithField("pod", podID).Warnf("the guest reports more than %d OOM events a second (limits.guest_events_per_second): reporting them no faster", perSecond)
				throttled = true
			}
			if err := limiter.Wait(ctx); err != nil {
				return
			}
		}
		got, err := wait(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// A transient error (or an agent without OOM support): try
			// again rather than lose OOM events.
			log.L.WithError(err).WithField("pod", podID).Debug("wait for OOM events")
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		publish(got)
	}
}

// ensureInitExits stops the VM if the init has not exited
// limits.agent_call_timeout after a SIGKILL the guest acknowledged: a
// guest that says yes and does nothing must not keep the task running.
func (c *Container) ensureInitExits() {
	d := c.callTimeout()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.init.exited:
		return
	case <-c.stopping:
		return
	case <-c.pod.sb.vm.Done():
		return
	case <-t.C:
	}
	c.pod.stopVM(fmt.Sprintf("the container's init did not exit within %s of SIGKILL (limits.agent_call_timeout)", d))
}
