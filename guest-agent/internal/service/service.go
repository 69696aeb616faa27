// Package service implements the agent's ttrpc API (api.AgentService) on top
// of the container manager.
package service

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agentlog"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/container"
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
	Shutdown()
}

// Service is the agent's API.
type Service struct {
	Containers    Containers
	KernelRelease string
	// PowerOff is called shortly after Shutdown answered.
	PowerOff func()
	// PowerOffDelay lets the Shutdown response reach the host first.
	PowerOffDelay time.Duration

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
		return nil, status.Error(codes.Unavailable, "agent is not ready yet")
	}
	return &api.InfoResponse{AgentVersion: Version, KernelRelease: s.KernelRelease, ReadyMs: s.readyMs.Load()}, nil
}

// CreateContainer prepares a container whose init waits for StartProcess.
func (s *Service) CreateContainer(ctx context.Context, req *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	pid, err := s.Containers.Create(ctx, req)
	if err != nil {
		return nil, err
	}
	return &api.CreateContainerResponse{Pid: uint32(pid)}, nil
}

// StartProcess lets a created process exec.
func (s *Service) StartProcess(ctx context.Context, req *api.StartProcessRequest) (*api.StartProcessResponse, error) {
	pid, err := s.Containers.Start(ctx, req.GetContainerId(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	return &api.StartProcessResponse{Pid: uint32(pid)}, nil
}

// WaitProcess returns once the process exited and its output is delivered.
func (s *Service) WaitProcess(ctx context.Context, req *api.WaitProcessRequest) (*api.WaitProcessResponse, error) {
	r, err := s.Containers.Wait(ctx, req.GetContainerId(), req.GetExecId())
	if err != nil {
		return nil, err
	}
	return &api.WaitProcessResponse{ExitStatus: r.Status, ExitedAtUnixNano: r.ExitedAt.UnixNano()}, nil
}

// SignalProcess signals a process or, with all, the whole container.
func (s *Service) SignalProcess(ctx context.Context, req *api.SignalProcessRequest) (*api.Empty, error) {
	sig := req.GetSignal()
	if sig == 0 || sig > 64 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid signal %d", sig)
	}
	if err := s.Containers.Signal(req.GetContainerId(), req.GetExecId(), unix.Signal(sig), req.GetAll()); err != nil {
		return nil, err
	}
	return &api.Empty{}, nil
}

// DeleteContainer kills and removes a container.
func (s *Service) DeleteContainer(ctx context.Context, req *api.DeleteContainerRequest) (*api.Empty, error) {
	if err := s.Containers.Delete(ctx, req.GetContainerId()); err != nil {
		return nil, err
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
