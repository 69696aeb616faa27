package service

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// These calls are being implemented; until then they say so.

func (s *Service) ExecProcess(ctx context.Context, r *api.ExecProcessRequest) (*api.Empty, error) {
	return nil, status.Error(codes.Unimplemented, "exec is not implemented by this agent")
}

func (s *Service) ResizePty(ctx context.Context, r *api.ResizePtyRequest) (*api.Empty, error) {
	return nil, status.Error(codes.Unimplemented, "terminals are not implemented by this agent")
}

func (s *Service) ListProcesses(ctx context.Context, r *api.ListProcessesRequest) (*api.ListProcessesResponse, error) {
	return nil, status.Error(codes.Unimplemented, "process listing is not implemented by this agent")
}

func (s *Service) Stats(ctx context.Context, r *api.StatsRequest) (*api.StatsResponse, error) {
	return nil, status.Error(codes.Unimplemented, "stats are not implemented by this agent")
}

func (s *Service) UpdateContainer(ctx context.Context, r *api.UpdateContainerRequest) (*api.Empty, error) {
	return nil, status.Error(codes.Unimplemented, "update is not implemented by this agent")
}

func (s *Service) WaitOOM(ctx context.Context, r *api.Empty) (*api.OOMEvent, error) {
	return nil, status.Error(codes.Unimplemented, "OOM events are not implemented by this agent")
}
