// Package service implements the agent's ttrpc API (api.AgentService) on top
// of the container manager.
package service

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agentlog"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/container"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/listeners"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/netconfig"
)

// Version is the agent version reported by Info (set with -ldflags -X).
var Version = "0.1.0"

// Containers is what the service needs from the container manager.
type Containers interface {
	Create(ctx context.Context, req *api.CreateContainerRequest) (int, error)
	Start(ctx context.Context, cid, eid string) (int, error)
	Wait(ctx context.Context, cid, eid string) (container.WaitResult, error)
	Signal(cid, eid string, sig unix.Signal, all bool) error
	Delete(ctx context.Context, cid string) error
	// EnsurePrestarted starts the next container's init ahead unless one
	// waits already.
	EnsurePrestarted(ctx context.Context) error
	Shutdown()
	Exec(ctx context.Context, req *api.ExecProcessRequest) error
	DeleteProcess(ctx context.Context, cid, eid string) error
	ResizePty(ctx context.Context, cid, eid string, width, height uint32) error
	ListProcesses(ctx context.Context, cid string) ([]container.ProcessInfo, error)
	Stats(ctx context.Context, cid string) ([]byte, error)
	Update(ctx context.Context, cid string, resourcesJSON []byte) error
	WaitOOM(ctx context.Context) (string, error)
}

// Network configures the guest's network (netconfig.Configurator).
type Network interface {
	Configure(cfg netconfig.Config) error
}

// Service is the agent's API.
type Service struct {
	Containers    Containers
	Network       Network
	KernelRelease string
	// PowerOff is called shortly after Shutdown answered.
	PowerOff func()
	// PowerOffDelay lets the Shutdown response reach the host first.
	PowerOffDelay time.Duration
	// SetClock and AddEntropy apply what Restored carries (package boot).
	SetClock   func(time.Time) error
	AddEntropy func([]byte) error

	readyMs  atomic.Uint64
	ready    atomic.Bool
	shutdown sync.Once
}

var _ api.AgentService = (*Service)(nil)

// SetReady records when the agent became ready (ms since boot).
func (s *Service) SetReady(ms uint64) {
	s.readyMs.Store(ms)
	s.ready.Store(true)
}

// Info answers once the agent is ready.
func (s *Service) Info(ctx context.Context, _ *api.Empty) (*api.InfoResponse, error) {
	if !s.ready.Load() {
		return nil, refuse(errdefs.ErrUnavailable, "agent is not ready yet")
	}
	return &api.InfoResponse{AgentVersion: Version, KernelRelease: s.KernelRelease, ReadyMs: s.readyMs.Load()}, nil
}

// Restored sets the clock and reseeds the random number generator of a
// guest restored from a snapshot.
func (s *Service) Restored(ctx context.Context, req *api.RestoredRequest) (*api.Empty, error) {
	if s.SetClock == nil || s.AddEntropy == nil {
		return nil, refuse(errdefs.ErrNotImplemented, "this agent cannot set the clock or add entropy")
	}
	host := time.Unix(0, req.GetUnixNanos())
	skew := host.Sub(time.Now())
	if err := s.SetClock(host); err != nil {
		return nil, refuse(errdefs.ErrInternal, "%v", err)
	}
	if err := s.AddEntropy(req.GetEntropy()); err != nil {
		return nil, refuse(errdefs.ErrInvalidArgument, "%v", err)
	}
	agentlog.Infof("resumed from a VM snapshot: clock set (moved by %s), random number generator reseeded with %d bytes from the host", skew.Round(time.Millisecond), len(req.GetEntropy()))
	return &api.Empty{}, nil
}

// CreateContainer prepares a container whose init waits for StartProcess.
func (s *Service) CreateContainer(ctx context.Context, req *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	pid, err := s.Containers.Create(ctx, req)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &api.CreateContainerResponse{Pid: uint32(pid)}, nil
}

// StartProcess lets a created process exec.
func (s *Service) StartProcess(ctx context.Context, req *api.StartProcessRequest) (*api.StartProcessResponse, error) {
	pid, err := s.Containers.Start(ctx, req.GetContainerId(), req.GetExecId())
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &api.StartProcessResponse{Pid: uint32(pid)}, nil
}

// WaitProcess returns once the process exited and its output is delivered.
func (s *Service) WaitProcess(ctx context.Context, req *api.WaitProcessRequest) (*api.WaitProcessResponse, error) {
	r, err := s.Containers.Wait(ctx, req.GetContainerId(), req.GetExecId())
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &api.WaitProcessResponse{ExitStatus: r.Status, ExitedAtUnixNano: r.ExitedAt.UnixNano()}, nil
}

// SignalProcess signals a process or, with all, the whole container.
func (s *Service) SignalProcess(ctx context.Context, req *api.SignalProcessRequest) (*api.Empty, error) {
	sig := req.GetSignal()
	if sig == 0 || sig > 64 {
		return nil, refuse(errdefs.ErrInvalidArgument, "invalid signal %d", sig)
	}
	if err := s.Containers.Signal(req.GetContainerId(), req.GetExecId(), unix.Signal(sig), req.GetAll()); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &api.Empty{}, nil
}

// DeleteContainer kills and removes a container.
func (s *Service) DeleteContainer(ctx context.Context, req *api.DeleteContainerRequest) (*api.Empty, error) {
	if err := s.Containers.Delete(ctx, req.GetContainerId()); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if req.GetPrestartNext() {
		if err := s.Containers.EnsurePrestarted(ctx); err != nil {
			return nil, refuse(errdefs.ErrInternal, "%v", err)
		}
	}
	return &api.Empty{}, nil
}

// Shutdown kills everything, syncs and unmounts, answers, then powers off.
func (s *Service) Shutdown(ctx context.Context, _ *api.Empty) (*api.Empty, error) {
	s.shutdown.Do(func() {
		agentlog.Infof("shutdown requested")
		s.Containers.Shutdown()
		unix.Sync()
		if s.PowerOff != nil {
			delay := s.PowerOffDelay
			go func() {
				time.Sleep(delay)
				s.PowerOff()
			}()
		}
	})
	return &api.Empty{}, nil
}

// ExecProcess prepares another process in a container; it waits for
// StartProcess.
func (s *Service) ExecProcess(ctx context.Context, req *api.ExecProcessRequest) (*api.Empty, error) {
	if err := s.Containers.Exec(ctx, req); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &api.Empty{}, nil
}

// DeleteProcess forgets a finished (or never started) exec process.
func (s *Service) DeleteProcess(ctx context.Context, req *api.DeleteProcessRequest) (*api.Empty, error) {
	if err := s.Containers.DeleteProcess(ctx, req.GetContainerId(), req.GetExecId()); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &api.Empty{}, nil
}

// ResizePty sets the window size of a process's terminal.
func (s *Service) ResizePty(ctx context.Context, req *api.ResizePtyRequest) (*api.Empty, error) {
	if err := s.Containers.ResizePty(ctx, req.GetContainerId(), req.GetExecId(), req.GetWidth(), req.GetHeight()); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &api.Empty{}, nil
}

// ListProcesses lists the guest PIDs and command lines of a container's
// processes.
func (s *Service) ListProcesses(ctx context.Context, req *api.ListProcessesRequest) (*api.ListProcessesResponse, error) {
	ps, err := s.Containers.ListProcesses(ctx, req.GetContainerId())
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	resp := &api.ListProcessesResponse{}
	for _, p := range ps {
		resp.Processes = append(resp.Processes, &api.ProcessInfo{Pid: uint32(p.Pid), Command: p.Command})
	}
	return resp, nil
}

// Stats returns the container's cgroup v2 metrics.
func (s *Service) Stats(ctx context.Context, req *api.StatsRequest) (*api.StatsResponse, error) {
	b, err := s.Containers.Stats(ctx, req.GetContainerId())
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &api.StatsResponse{Metrics: b}, nil
}

// UpdateContainer applies new cgroup limits.
func (s *Service) UpdateContainer(ctx context.Context, req *api.UpdateContainerRequest) (*api.Empty, error) {
	if err := s.Containers.Update(ctx, req.GetContainerId(), req.GetResourcesJson()); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &api.Empty{}, nil
}

// WaitOOM blocks until a container has an OOM kill, or ctx ends.
func (s *Service) WaitOOM(ctx context.Context, _ *api.Empty) (*api.OOMEvent, error) {
	id, err := s.Containers.WaitOOM(ctx)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &api.OOMEvent{ContainerId: id}, nil
}

// listenersSlack is how long before the caller's deadline WaitListeners
// answers with an unchanged set.
const listenersSlack = 2 * time.Second

// WaitListeners returns the guest's listening TCP ports once they differ
// from the set the host knows.
func (s *Service) WaitListeners(ctx context.Context, req *api.WaitListenersRequest) (*api.Listeners, error) {
	// Answer a little before the caller's deadline with the set as it
	// is, rather than racing it: a reply that arrives after the host gave
	// up is only noise on the channel.
	wctx := ctx
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		wctx, cancel = context.WithDeadline(ctx, d.Add(-listenersSlack))
		defer cancel()
	}
	set, err := listeners.Wait(wctx, "/proc", req.GetGeneration())
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		set, err = listeners.Read("/proc")
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, errgrpc.ToGRPC(ctx.Err())
		}
		return nil, refuse(errdefs.ErrInternal, "read listening sockets: %v", err)
	}
	resp := &api.Listeners{Generation: set.Generation()}
	for _, p := range set.TCP {
		resp.TcpPorts = append(resp.TcpPorts, uint32(p))
	}
	for _, p := range set.UDP {
		resp.UdpPorts = append(resp.UdpPorts, uint32(p))
	}
	return resp, nil
}

// ConfigureNetwork brings up the NIC with the request's MAC and lo, with
// static addresses and the default route. Repeating the same request is
// harmless; a different one replaces the configuration (the container's
// namespace changed).
func (s *Service) ConfigureNetwork(ctx context.Context, req *api.ConfigureNetworkRequest) (*api.Empty, error) {
	if req.GetDetach() {
		mac, err := net.ParseMAC(req.GetMac())
		if err != nil {
			return nil, refuse(errdefs.ErrInvalidArgument, "detach network: mac %q: %v", req.GetMac(), err)
		}
		late := func(err error) {
			if err != nil {
				agentlog.Errorf("detach NIC %s: after the interface was gone: %v", mac, err)
			}
		}
		if err := netconfig.DetachRoot(mac, late); err != nil {
			agentlog.Errorf("detach NIC %s: %v", mac, err)
			return nil, refuse(errdefs.ErrInternal, "detach network: %v", err)
		}
		agentlog.Infof("NIC %s detached: the container's namespace has no interface", mac)
		return &api.Empty{}, nil
	}
	cfg, err := netconfig.Parse(req.GetMac(), req.GetAddress(), req.GetGateway(), req.GetMtu(), req.GetExtraAddresses())
	if err != nil {
		return nil, refuse(errdefs.ErrInvalidArgument, "configure network: %v", err)
	}
	if s.Network == nil {
		return nil, refuse(errdefs.ErrNotImplemented, "configure network: this agent has no network configurator")
	}
	if err := s.Network.Configure(cfg); err != nil {
		agentlog.Errorf("configure network (%s): %v", cfg, err)
		if errdefs.IsNotFound(err) { // no NIC has that MAC (netconfig.ErrNoLink)
			return nil, errgrpc.ToGRPC(fmt.Errorf("configure network: %w", err))
		}
		return nil, refuse(errdefs.ErrInternal, "configure network: %v", err)
	}
	agentlog.Infof("network configured: %s", cfg)
	return &api.Empty{}, nil
}

// refuse is an error of the service's own: kind (an errdefs error) picks its
// gRPC code and the text is exactly the message.
func refuse(kind interface{ WithMessage(string) error }, format string, args ...any) error {
	return errgrpc.ToGRPC(kind.WithMessage(fmt.Sprintf(format, args...)))
}
