package runtime

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// pod is one VM and everything that serves it: the VMM and its file
// servers, the agent connection, the network namespace and the policy
// network in it, the host cgroup, and the watchers that turn a VM that
// goes wrong into exits. Its containers run in the VM; the first of them,
// the owner, created it and ends it. A container created on its own is
// the owner of a pod of one.
type pod struct {
	// id is the owner's container ID.
	id string
	rt *Runtime

	sb    *sandbox
	net   *sandboxNetwork // nil without a NIC (net.mode=none)
	netns *netNS
	// placeholders stand for the secrets' values in every process's
	// environment; the real values stay on the host.
	placeholders map[string]string
	memoryMiB    uint64
	cpus         uint32
	// cgroup is the pod's host cgroup (the owner's linux.cgroupsPath)
	// holding QEMU and the virtiofsds; nil without a cgroupsPath.
	cgroup *hostCgroup
	// host records what was made on the host for the VM; it is the
	// owner's host state.
	host *hostState
	// shareDir is a CRI pod's share (podshare.go), through which its
	// containers' roots reach the running VM; "" for a pod of one.
	shareDir string

	// owner is the container that made the pod; its init's state says
	// whether the VM is paused (only the owner pauses it).
	owner *Container
	// vmStopOnce stops the VM once when a helper dies or the guest is
	// wedged.
	vmStopOnce sync.Once

	// stopping is closed when the owner's Delete tears the VM down on
	// purpose.
	stopping     chan struct{}
	stoppingOnce sync.Once

	mu      sync.Mutex
	members map[string]*Container
}

// newPod starts the pod that owner makes; its VM is not running yet.
func newPod(r *Runtime, owner *Container) *pod {
	return &pod{id: owner.ID, rt: r, owner: owner, stopping: make(chan struct{}), members: map[string]*Container{}}
}

// vmmPid is the VMM's pid, the pid containerd knows every container of
// the pod by; 0 before the VM runs.
func (p *pod) vmmPid() int {
	if p.sb == nil || p.sb.vm == nil {
		return 0
	}
	return p.sb.vm.Pid()
}

// paused says the VM's vCPUs are stopped, as its owner's init's state
// records: no guest call can be answered.
func (p *pod) paused() bool {
	return p.owner != nil && p.owner.init != nil && p.owner.init.current().status() == StatusPaused
}

// member returns the pod's container id, if it is one.
func (p *pod) member(id string) (*Container, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.members[id]
	return c, ok
}

// join makes c a container of the pod.
func (p *pod) join(c *Container) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.members[c.ID] = c
}

// add makes c, created in the running VM, a container of the pod; a pod
// whose VM was torn down meanwhile takes none.
func (p *pod) add(c *Container) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.stopping:
		return fmt.Errorf("the VM of pod %s was stopped while %s was created: %w", p.id, c.ID, errdefs.ErrFailedPrecondition)
	default:
	}
	p.members[c.ID] = c
	return nil
}

// leave removes c from the pod.
func (p *pod) leave(c *Container) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.members, c.ID)
}

// start follows the VM once it runs: the VMM, its file servers (one per
// share), its agent and the guest kernel's OOM kills.
func (p *pod) start(shares []share) {
	go p.watchVM()
	go p.watchAgent()
	go p.watchOOM()
	for i, fs := range p.sb.fs {
		go p.watchFileServer(shares[i].tag, fs)
	}
}

// stop ends the VM on purpose; what watches it stands down first, and
// no container joins it any more.
func (p *pod) stop(ctx context.Context) {
	p.mu.Lock()
	p.stoppingOnce.Do(func() { close(p.stopping) })
	p.mu.Unlock()
	p.sb.stop(ctx, 3*time.Second)
}

// stopped says the pod's VM was torn down on purpose.
func (p *pod) stopped() bool {
	select {
	case <-p.stopping:
		return true
	default:
		return false
	}
}

// releaseNetwork closes the policy network and releases the network
// namespace, once the VM is gone.
func (p *pod) releaseNetwork(ctx context.Context) {
	if err := p.net.Close(); err != nil {
		log.G(ctx).WithError(err).WithField("pod", p.id).Warn("close the pod's network")
	}
	if err := p.netns.Close(); err != nil {
		log.G(ctx).WithError(err).WithField("pod", p.id).Warn("release the pod's network namespace")
	}
}

// running is cancelled when the VM is torn down or goes away.
func (p *pod) runningContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-p.stopping:
		case <-p.sb.vm.Done():
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}
