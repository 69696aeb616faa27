package runtime

import (
	"context"
	"fmt"

	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/log"
	"google.golang.org/protobuf/proto"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// Stats are the container's cgroup v2 metrics, the host's figures where the
// host measures them.

// StatsTypeURL is the type of the bytes Stats returns.
const StatsTypeURL = "io.containerd.cgroups.v2.Metrics"

// Stats returns the container's cgroup v2 metrics, proto-encoded as
// StatsTypeURL. With a host cgroup, what counts against the host comes
// from it: CPU, memory and memory events are the VM's host processes'
// (QEMU and the virtiofsds), which the guest cannot fake. Pids, IO, RDMA
// and hugetlb figures are the guest's word about the container's own
// cgroup inside the VM. Without a host cgroup every figure is the guest's.
// A CRI pod's containers other than its sandbox have no host cgroup.
func (c *Container) Stats(ctx context.Context) ([]byte, error) {
	// The host cgroup is the whole VM's: its figures are its owner's. A
	// CRI pod's other containers have the guest's word only (the pod's
	// figures are the sandbox's, and crictl statsp reads the pod cgroup).
	cg := c.pod.cgroup
	if c.pod.owner != c {
		cg = nil
	}
	if cg != nil && c.paused() {
		// A paused VM cannot answer; the host's figures are there.
		host, err := cg.figures()
		if err != nil {
			return nil, fmt.Errorf("stats of %s: %w", c.ID, err)
		}
		return mergeHostFigures(nil, host)
	}
	var resp *api.StatsResponse
	err := c.guestCall(ctx, "read stats", func(ctx context.Context) (err error) {
		resp, err = c.pod.sb.agent.Stats(ctx, &api.StatsRequest{ContainerId: c.ID})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", c.ID, agentError(err))
	}
	if cg == nil {
		return resp.Metrics, nil
	}
	host, err := cg.figures()
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", c.ID, err)
	}
	return mergeHostFigures(resp.Metrics, host)
}

// mergeHostFigures puts the host cgroup's figures into the guest's metrics.
func mergeHostFigures(guest []byte, host hostFigures) ([]byte, error) {
	var m v2stats.Metrics
	if err := proto.Unmarshal(guest, &m); err != nil {
		// The guest's bytes are the guest's: a malformed message
		// leaves the host's figures alone.
		log.L.WithError(err).Debug("guest metrics are not a cgroup v2 Metrics message")
		m.Reset()
	}
	m.CPU, m.Memory, m.MemoryEvents = host.cpu, host.memory, host.events
	b, err := proto.Marshal(&m)
	if err != nil {
		return nil, fmt.Errorf("encode metrics: %w", err)
	}
	return b, nil
}
