package runtime

import (
	"context"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// refusingAgent is a hostile agent that answers every signal with an
// error instead of acting on it.
type refusingAgent struct {
	api.AgentService
	code codes.Code
}

func (a refusingAgent) SignalProcess(context.Context, *api.SignalProcessRequest) (*api.Empty, error) {
	return nil, status.Error(a.code, "process already finished")
}

// A guest that refuses a SIGKILL to the init (with "not found", which
// containerd's clients take as "already exited" and then wait on, or any
// other error) still has its VM stopped within limits.agent_call_timeout:
// ctr task delete -f, docker rm -f and the kubelet must not wait forever.
func TestKillRefusedByGuestStopsVM(t *testing.T) {
	for _, code := range []codes.Code{codes.NotFound, codes.Internal, codes.FailedPrecondition} {
		t.Run(code.String(), func(t *testing.T) {
			c, vm := testContainer(t, 100*time.Millisecond)
			c.sb.agent = &agentConn{AgentService: refusingAgent{code: code}}
			c.init.status = StatusRunning
			_ = c.init.Kill(context.Background(), uint32(syscall.SIGKILL), false)
			select {
			case <-vm.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the VM was not stopped after the guest refused SIGKILL")
			}
		})
	}
	// Another signal is the guest's business: no VM is stopped for it.
	c, vm := testContainer(t, 50*time.Millisecond)
	c.sb.agent = &agentConn{AgentService: refusingAgent{code: codes.NotFound}}
	c.init.status = StatusRunning
	_ = c.init.Kill(context.Background(), uint32(syscall.SIGTERM), false)
	time.Sleep(200 * time.Millisecond)
	if vm.stops.Load() != 0 {
		t.Errorf("the VM was stopped for a refused SIGTERM")
	}
}
