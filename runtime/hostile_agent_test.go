package runtime

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/containerd/ttrpc"
	spb "google.golang.org/genproto/googleapis/rpc/status"
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
			c.pod.sb.agent = &agentConn{AgentService: refusingAgent{code: code}}
			c.init.state = initRunning{}
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
	c.pod.sb.agent = &agentConn{AgentService: refusingAgent{code: codes.NotFound}}
	c.init.state = initRunning{}
	_ = c.init.Kill(context.Background(), uint32(syscall.SIGTERM), false)
	time.Sleep(200 * time.Millisecond)
	if vm.stops.Load() != 0 {
		t.Errorf("the VM was stopped for a refused SIGTERM")
	}
}

// ttrpcStatusResponse is the guest's error answer to the host's first call.
func ttrpcStatusResponse(t testing.TB, code codes.Code, msg string) []byte {
	return ttrpcAnswer(t, &ttrpc.Response{Status: &spb.Status{Code: int32(code), Message: msg}})
}

// answeringGuest sends its bytes once the host has written after the
// channel was opened, i.e. made its call: a ttrpc answer that comes
// before the call is dropped.
type answeringGuest struct {
	*guestConn
	opened    atomic.Bool
	once      sync.Once
	requested chan struct{}
}

func (g *answeringGuest) Write(p []byte) (int, error) {
	if g.opened.Load() {
		g.once.Do(func() { close(g.requested) })
	}
	return g.guestConn.Write(p)
}

// The guest's error text reaches the shim log and clients' terminals: it
// arrives cut to maxGuestMessage, with no control character, escape
// sequence or other non-printable rune left in it, and keeps its code
// (invalid UTF-8 fails the answer's decoding already).
func TestAgentErrorTextBounded(t *testing.T) {
	hostile := api.ProcessStartFailed + ": \x1b]52;c;cGF5bG9hZA==\x07\x1b[2J\nlevel=error msg=forged\r\u202egnp.exe\u0085" + strings.Repeat("A", 200<<10)
	g := &answeringGuest{guestConn: newGuestConn(ttrpcStatusResponse(t, codes.NotFound, hostile)), requested: make(chan struct{})}
	g.start = make(chan struct{}) // the answer comes once the call is made
	a, err := newAgentConn(context.Background(), g)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	defer a.Close()
	g.opened.Store(true)
	go func() {
		<-g.requested
		close(g.start)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = a.WaitListeners(ctx, &api.WaitListenersRequest{})
	if err == nil {
		t.Fatal("no error")
	}
	st, _ := status.FromError(err)
	if st.Code() != codes.NotFound {
		t.Errorf("code %v, want NotFound", st.Code())
	}
	msg := processStartError("exec", "exec", err).Error()
	if len(msg) > maxGuestMessage+200 {
		t.Errorf("message of %d bytes, want at most about %d", len(msg), maxGuestMessage)
	}
	if !strings.HasPrefix(msg, "OCI runtime exec failed: exec failed: "+api.ProcessStartFailed) {
		t.Errorf("the start failure is no longer recognised: %.100q", msg)
	}
	if !utf8.ValidString(msg) {
		t.Errorf("invalid UTF-8 passed: %.200q", msg)
	}
	for _, r := range msg {
		if !unicode.IsPrint(r) {
			t.Fatalf("non-printable %U passed: %.200q", r, msg)
		}
	}
	for _, want := range []string{`\x1b]52;c;`, `\nlevel=error`, `\u202e`, `\u0085`, "more bytes from the guest cut"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q not in %.300q", want, msg)
		}
	}
}

func FuzzGuestText(f *testing.F) {
	f.Add("plain", 10)
	f.Add("\x1b[31mred\xff\u202e", 4)
	f.Fuzz(func(t *testing.T, s string, max int) {
		max = max%8192 + 1
		if max < 1 {
			max += 8192
		}
		out := guestText(s, max)
		if !utf8.ValidString(out) {
			t.Fatalf("invalid UTF-8: %q", out)
		}
		for _, r := range out {
			if !unicode.IsPrint(r) {
				t.Fatalf("non-printable %U in %q", r, out)
			}
		}
		// An escape is at most 10 bytes, the note under 60.
		if len(out) > max+10+60 {
			t.Fatalf("%d bytes for a bound of %d", len(out), max)
		}
	})
}
