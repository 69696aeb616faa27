package service

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/container"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/netconfig"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/reaper"
)

// The agent's domain errors carry errdefs kinds; the service turns them into
// gRPC codes, and the host (runtime/agent.go agentError: errgrpc.ToNative)
// gets the same kind back. The host relies on some of them: Unavailable
// while the agent sets up (waitReady), NotFound for a process that is gone,
// FailedPrecondition with api.ProcessStartFailed for a process that could not
// start.
func TestDomainErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
		is   func(error) bool // the host's view after errgrpc.ToNative
	}{
		{"unknown container", fmt.Errorf("container %q: %w", "c", errdefs.ErrNotFound), codes.NotFound, errdefs.IsNotFound},
		{"unknown exec", fmt.Errorf("process %q of container %q: %w", "e", "c", errdefs.ErrNotFound), codes.NotFound, errdefs.IsNotFound},
		{"wrapped twice", fmt.Errorf("signal: %w", fmt.Errorf("process 7 already finished: %w", errdefs.ErrNotFound)), codes.NotFound, errdefs.IsNotFound},
		{"container exists", fmt.Errorf("container %q: %w", "c", errdefs.ErrAlreadyExists), codes.AlreadyExists, errdefs.IsAlreadyExists},
		{"bad request", fmt.Errorf("container %q: rootfs_tag must not be empty: %w", "c", errdefs.ErrInvalidArgument), codes.InvalidArgument, errdefs.IsInvalidArgument},
		{"not running", fmt.Errorf("cannot exec in container %q: it is not running: %w", "c", errdefs.ErrFailedPrecondition), codes.FailedPrecondition, errdefs.IsFailedPrecondition},
		{"not ready", errdefs.ErrUnavailable.WithMessage("agent is not ready yet"), codes.Unavailable, errdefs.IsUnavailable},
		{"no such NIC", fmt.Errorf("configure network: %w", fmt.Errorf("%w 02:00:00:00:00:09", netconfig.ErrNoLink)), codes.NotFound, errdefs.IsNotFound},
		{"stdio timeout", fmt.Errorf("timed out waiting for the host to open the stdout: %w", context.DeadlineExceeded), codes.DeadlineExceeded,
			func(err error) bool { return errors.Is(err, context.DeadlineExceeded) }},
		{"call cancelled", context.Canceled, codes.Canceled, func(err error) bool { return errors.Is(err, context.Canceled) }},
		{"no kind", errors.New("mount rootfs: no such device"), codes.Unknown, errdefs.IsUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := status.Convert(errgrpc.ToGRPC(tc.err))
			if st.Code() != tc.code {
				t.Fatalf("code %s, want %s", st.Code(), tc.code)
			}
			if st.Message() != tc.err.Error() {
				t.Fatalf("message %q, want the error's text %q", st.Message(), tc.err.Error())
			}
			back := errgrpc.ToNative(st.Err())
			if !tc.is(back) {
				t.Fatalf("host sees %v (%T), not the same kind", back, errdefs.Resolve(back))
			}
		})
	}
}

// A process the guest could not start keeps its exact text: the host shows
// it in runc's words ("OCI runtime exec failed: exec failed: ...").
func TestProcessStartFailedText(t *testing.T) {
	err := errdefs.ErrFailedPrecondition.WithMessage(api.ProcessStartFailed + `: exec: "nope": executable file not found in $PATH`)
	st := status.Convert(errgrpc.ToGRPC(err))
	if st.Code() != codes.FailedPrecondition || !strings.HasPrefix(st.Message(), api.ProcessStartFailed) || strings.HasSuffix(st.Message(), "failed precondition") {
		t.Fatalf("got %s %q", st.Code(), st.Message())
	}
}

// The handlers convert what the real container manager returns.
func TestHandlersConvert(t *testing.T) {
	ctx := context.Background()
	cfg := container.DefaultConfig()
	cfg.StateDir, cfg.FilesDir, cfg.CgroupRoot = t.TempDir(), t.TempDir(), t.TempDir()
	s := &Service{Containers: container.NewManager(cfg, reaper.New(), nil)}

	check := func(what string, err error, want codes.Code, is func(error) bool) {
		t.Helper()
		if _, ok := status.FromError(err); !ok {
			t.Fatalf("%s: %v is not a gRPC status", what, err)
		}
		if status.Code(err) != want || !is(errgrpc.ToNative(err)) {
			t.Fatalf("%s: %v, want %s", what, err, want)
		}
	}
	_, err := s.Info(ctx, &api.Empty{})
	check("Info before ready", err, codes.Unavailable, errdefs.IsUnavailable)
	_, err = s.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: "nope"})
	check("WaitProcess of unknown container", err, codes.NotFound, errdefs.IsNotFound)
	_, err = s.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: "nope", ExecId: "e1", Signal: 9})
	check("SignalProcess of unknown exec", err, codes.NotFound, errdefs.IsNotFound)
	_, err = s.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: "nope", Signal: 99})
	check("SignalProcess with a bad signal", err, codes.InvalidArgument, errdefs.IsInvalidArgument)
	_, err = s.DeleteProcess(ctx, &api.DeleteProcessRequest{ContainerId: "nope"})
	check("DeleteProcess without an exec id", err, codes.InvalidArgument, errdefs.IsInvalidArgument)
	_, err = s.DeleteProcess(ctx, &api.DeleteProcessRequest{ContainerId: "nope", ExecId: "e1"})
	check("DeleteProcess of unknown container", err, codes.NotFound, errdefs.IsNotFound)
	_, err = s.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: "c", Process: &api.Process{Args: []string{"sh"}}})
	check("CreateContainer without rootfs_tag", err, codes.InvalidArgument, errdefs.IsInvalidArgument)
	_, err = s.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "nope", ExecId: "e1", Process: &api.Process{Args: []string{"true"}}})
	check("ExecProcess in unknown container", err, codes.NotFound, errdefs.IsNotFound)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = s.WaitOOM(cctx, &api.Empty{})
	check("WaitOOM after its context", err, codes.Canceled, func(err error) bool { return errors.Is(err, context.Canceled) })
}
