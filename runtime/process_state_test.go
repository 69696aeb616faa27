package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/earendil-works/gondolin-containerd/config"
	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// stateAgent is a guest agent that does what it is asked. A process's
// WaitProcess answers once the process is killed or deleted, or the test
// ends.
type stateAgent struct {
	api.AgentService
	startGate chan struct{} // nil, or StartProcess waits for it
	mu        sync.Mutex
	ends      map[string]chan struct{}
	done      chan struct{}
}

func newStateAgent(t *testing.T) *stateAgent {
	a := &stateAgent{ends: map[string]chan struct{}{}, done: make(chan struct{})}
	t.Cleanup(func() { close(a.done) })
	return a
}

// end is closed when process execID is killed or deleted.
func (a *stateAgent) end(execID string) chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	ch, ok := a.ends[execID]
	if !ok {
		ch = make(chan struct{})
		a.ends[execID] = ch
	}
	return ch
}

func (a *stateAgent) finish(execID string) {
	ch := a.end(execID)
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-ch:
	default:
		close(ch)
	}
}

func (a *stateAgent) StartProcess(ctx context.Context, r *api.StartProcessRequest) (*api.StartProcessResponse, error) {
	if a.startGate != nil {
		<-a.startGate
	}
	return &api.StartProcessResponse{Pid: 42}, nil
}

func (a *stateAgent) SignalProcess(_ context.Context, r *api.SignalProcessRequest) (*api.Empty, error) {
	if r.Signal == uint32(syscall.SIGKILL) {
		a.finish(r.ExecId)
	}
	return &api.Empty{}, nil
}

func (a *stateAgent) ExecProcess(context.Context, *api.ExecProcessRequest) (*api.Empty, error) {
	return &api.Empty{}, nil
}

func (a *stateAgent) DeleteProcess(_ context.Context, r *api.DeleteProcessRequest) (*api.Empty, error) {
	a.finish(r.ExecId)
	return &api.Empty{}, nil
}

func (a *stateAgent) WaitProcess(ctx context.Context, r *api.WaitProcessRequest) (*api.WaitProcessResponse, error) {
	select {
	case <-a.end(r.ExecId):
		return &api.WaitProcessResponse{ExitStatus: killedStatus, ExitedAtUnixNano: time.Now().UnixNano()}, nil
	case <-a.done:
		return nil, errors.New("test over")
	}
}

func (a *stateAgent) ResizePty(context.Context, *api.ResizePtyRequest) (*api.Empty, error) {
	return &api.Empty{}, nil
}

func (a *stateAgent) Shutdown(context.Context, *api.Empty) (*api.Empty, error) {
	return &api.Empty{}, nil
}

// stateContainer is a created container with a terminal, on a VM that does
// nothing and an agent that does what it is asked; exits counts the exits
// reported.
func stateContainer(t *testing.T) (c *Container, exits *atomic.Int64) {
	t.Helper()
	cfg := config.Default(t.TempDir())
	cfg.Limits.AgentCallTimeout = config.Duration{Duration: time.Second}
	exits = &atomic.Int64{}
	rt := New(Config{Runtime: cfg, StateRoot: t.TempDir(), Namespace: "ns", OnExit: func(Exit) { exits.Add(1) }})
	host, err := newHostState(context.Background(), rt.cfg.StateRoot, "ns", "c1", "/bundle")
	if err != nil {
		t.Fatal(err)
	}
	c = &Container{
		ID: "c1", rt: rt, spec: &specs.Spec{}, host: host,
		execs: map[string]*Process{}, stopping: make(chan struct{}),
	}
	c.pod = newPod(rt, c)
	c.pod.netns, c.pod.host = &netNS{}, host
	c.pod.sb = &sandbox{vm: newFakeVM(), agent: &agentConn{AgentService: newStateAgent(t)}}
	c.pod.join(c)
	c.init = newProcess(c, "", Stdio{Terminal: true}, &hostIO{})
	rt.containers[c.ID] = c
	return c, exits
}

// putIn moves p to st as its life would: a process that is stopped or
// deleted has its exit recorded.
func putIn(p *Process, st processState) {
	if st.status() == StatusStopped {
		p.setExited(0, time.Now())
	}
	p.mu.Lock()
	p.state = st
	p.mu.Unlock()
}

// A transition is one operation in one state: the error kind it gives
// (nil for none) and the state it leaves the process in.
type transition struct {
	from processState
	op   string
	err  error
	to   processState
}

var (
	fp = errdefs.ErrFailedPrecondition
	nf = errdefs.ErrNotFound
)

// checkTransition runs tr.op on p and checks its outcome.
func checkTransition(t *testing.T, tr transition, p *Process, op func() error) {
	t.Helper()
	err := op()
	switch {
	case tr.err == nil && err != nil:
		t.Errorf("%s in %s: %v", tr.op, tr.from.name(), err)
	case tr.err != nil && !errors.Is(err, tr.err):
		t.Errorf("%s in %s: error %v, want %v", tr.op, tr.from.name(), err, tr.err)
	case tr.err != nil && !strings.Contains(err.Error(), "it is "+tr.from.name()):
		t.Errorf("%s in %s: the error does not name the state: %v", tr.op, tr.from.name(), err)
	}
	if got := p.current(); got != tr.to {
		t.Errorf("%s in %s: now %s, want %s", tr.op, tr.from.name(), got.name(), tr.to.name())
	}
}

// The init's states: each operation of the task API either moves it on or
// is refused with an error naming the state.
func TestInitStateTransitions(t *testing.T) {
	created, running, paused, stopped, deleted := initCreated{}, initRunning{}, initPaused{}, initStopped{}, deletedState{}
	table := []transition{
		{created, "Start", nil, running},
		{created, "Kill", nil, created},
		{created, "KillAll", nil, created},
		{created, "Pause", fp, created},
		{created, "Resume", fp, created},
		{created, "Exec", nil, created},
		{created, "Delete", nil, deleted},
		{created, "ResizePty", nil, created},
		{created, "CloseIO", nil, created},

		{running, "Start", fp, running},
		{running, "Kill", nil, running},
		{running, "KillAll", nil, running},
		{running, "Pause", nil, paused},
		{running, "Resume", fp, running},
		{running, "Exec", nil, running},
		{running, "Delete", fp, running},
		{running, "ResizePty", nil, running},
		{running, "CloseIO", nil, running},

		{paused, "Start", fp, paused},
		{paused, "Kill", nil, running}, // resumed, so the guest acts on it
		{paused, "KillAll", nil, running},
		{paused, "Pause", fp, paused},
		{paused, "Resume", nil, running},
		{paused, "Exec", fp, paused},
		{paused, "Delete", fp, paused},
		{paused, "ResizePty", fp, paused},
		{paused, "CloseIO", nil, paused},

		{stopped, "Start", fp, stopped},
		{stopped, "Kill", nf, stopped},
		{stopped, "KillAll", nil, stopped},
		{stopped, "Pause", fp, stopped},
		{stopped, "Resume", fp, stopped},
		{stopped, "Exec", fp, stopped},
		{stopped, "Delete", nil, deleted},
		{stopped, "ResizePty", fp, stopped},
		{stopped, "CloseIO", nil, stopped},

		{deleted, "Start", nf, deleted},
		{deleted, "Kill", nf, deleted},
		{deleted, "KillAll", nf, deleted},
		{deleted, "Pause", nf, deleted},
		{deleted, "Resume", nf, deleted},
		{deleted, "Exec", nf, deleted},
		{deleted, "Delete", nf, deleted},
		{deleted, "ResizePty", nf, deleted},
		{deleted, "CloseIO", nf, deleted},
	}
	ctx := context.Background()
	for _, tr := range table {
		t.Run(tr.from.name()+"/"+tr.op, func(t *testing.T) {
			c, _ := stateContainer(t)
			p := c.init
			putIn(p, tr.from)
			ops := map[string]func() error{
				"Start":     func() error { _, err := c.Start(ctx); return err },
				"Kill":      func() error { return p.Kill(ctx, uint32(syscall.SIGTERM), false) },
				"KillAll":   func() error { return p.Kill(ctx, uint32(syscall.SIGTERM), true) },
				"Pause":     func() error { return c.Pause(ctx) },
				"Resume":    func() error { return c.Resume(ctx) },
				"Exec":      func() error { _, err := c.Exec(ctx, "e1", &specs.Process{Args: []string{"true"}}, Stdio{}); return err },
				"Delete":    func() error { _, err := c.Delete(ctx); return err },
				"ResizePty": func() error { return p.ResizePty(ctx, 80, 24) },
				"CloseIO":   func() error { return p.CloseIO() },
			}
			checkTransition(t, tr, p, ops[tr.op])
		})
	}
}

// An exec's states: it is paused only with its container, which the task
// API reports.
func TestExecStateTransitions(t *testing.T) {
	created, running, stopped, deleted := execCreated{}, execRunning{}, execStopped{}, deletedState{}
	table := []transition{
		{created, "Start", nil, running},
		{created, "Kill", nil, created},
		{created, "KillAll", nil, created},
		{created, "Delete", nil, deleted},
		{created, "ResizePty", nil, created},
		{created, "CloseIO", nil, created},

		{running, "Start", fp, running},
		{running, "Kill", nil, running},
		{running, "KillAll", nil, running},
		{running, "Delete", fp, running},
		{running, "ResizePty", nil, running},
		{running, "CloseIO", nil, running},

		{stopped, "Start", fp, stopped},
		{stopped, "Kill", nf, stopped},
		{stopped, "KillAll", nil, stopped},
		{stopped, "Delete", nil, deleted},
		{stopped, "ResizePty", fp, stopped},
		{stopped, "CloseIO", nil, stopped},

		{deleted, "Start", nf, deleted},
		{deleted, "Kill", nf, deleted},
		{deleted, "KillAll", nf, deleted},
		{deleted, "Delete", nf, deleted},
		{deleted, "ResizePty", nf, deleted},
		{deleted, "CloseIO", nf, deleted},
	}
	ctx := context.Background()
	for _, tr := range table {
		t.Run(tr.from.name()+"/"+tr.op, func(t *testing.T) {
			c, _ := stateContainer(t)
			putIn(c.init, initRunning{})
			p, err := c.Exec(ctx, "e1", &specs.Process{Args: []string{"sh"}, Terminal: true}, Stdio{Terminal: true})
			if err != nil {
				t.Fatal(err)
			}
			putIn(p, tr.from)
			ops := map[string]func() error{
				"Start":     func() error { _, err := p.Start(ctx); return err },
				"Kill":      func() error { return p.Kill(ctx, uint32(syscall.SIGTERM), false) },
				"KillAll":   func() error { return p.Kill(ctx, uint32(syscall.SIGTERM), true) },
				"Delete":    func() error { _, err := c.DeleteExec(ctx, "e1"); return err },
				"ResizePty": func() error { return p.ResizePty(ctx, 80, 24) },
				"CloseIO":   func() error { return p.CloseIO() },
			}
			checkTransition(t, tr, p, ops[tr.op])
		})
	}
}

// Every live state ends in stopped when the process exits, and the exit is
// reported once; a second exit (the VM's end after the process's own)
// changes nothing.
func TestExitTransitions(t *testing.T) {
	for _, tc := range []struct {
		from, to processState
		exec     bool
	}{
		{initCreated{}, initStopped{}, false},
		{initRunning{}, initStopped{}, false},
		{initPaused{}, initStopped{}, false},
		{execCreated{}, execStopped{}, true},
		{execRunning{}, execStopped{}, true},
	} {
		t.Run(fmt.Sprintf("%T", tc.from), func(t *testing.T) {
			c, exits := stateContainer(t)
			p := c.init
			if tc.exec {
				p = newProcess(c, "e1", Stdio{}, &hostIO{})
			}
			putIn(p, tc.from)
			p.setExited(3, time.Now())
			p.setExited(killedStatus, time.Now())
			if p.current() != tc.to {
				t.Errorf("now %s, want %s", p.current().name(), tc.to.name())
			}
			if st := p.State(); st.Status != StatusStopped || st.ExitStatus != 3 {
				t.Errorf("state %+v", st)
			}
			if n := exits.Load(); n != 1 {
				t.Errorf("%d exits reported, want 1", n)
			}
		})
	}
}

// An exec that runs while its container is paused is reported paused.
func TestExecPausedWithContainer(t *testing.T) {
	c, _ := stateContainer(t)
	putIn(c.init, initPaused{})
	p := newProcess(c, "e1", Stdio{}, &hostIO{})
	putIn(p, execRunning{})
	if st := p.State(); st.Status != StatusPaused {
		t.Errorf("exec in a paused container: %s", st.Status)
	}
}

// An exit is recorded only once the start that returned the process's pid
// is done: the exit carries that pid, and a second start finds the process
// running rather than starting it again.
func TestExitWaitsForStart(t *testing.T) {
	c, _ := stateContainer(t)
	agent := &stateAgent{ends: map[string]chan struct{}{}, done: make(chan struct{}), startGate: make(chan struct{})}
	defer close(agent.done)
	c.pod.sb.agent = &agentConn{AgentService: agent}
	p := newProcess(c, "e1", Stdio{}, &hostIO{})
	started := make(chan error, 1)
	go func() {
		_, err := p.Start(context.Background())
		started <- err
	}()
	second := make(chan error, 1)
	exited := make(chan struct{})
	time.Sleep(50 * time.Millisecond) // the first start is in the guest
	go func() {
		_, err := p.Start(context.Background())
		second <- err
	}()
	go func() {
		p.setExited(0, time.Now())
		close(exited)
	}()
	select {
	case <-exited:
		t.Fatal("the exit was recorded while the start was in the guest")
	case <-time.After(100 * time.Millisecond):
	}
	close(agent.startGate)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	<-exited
	exit, err := p.Wait(context.Background())
	if err != nil || exit.Pid != 42 {
		t.Errorf("exit %+v, %v; want the started pid 42", exit, err)
	}
	if err := <-second; !errdefs.IsFailedPrecondition(err) {
		t.Errorf("second start: %v", err)
	}
}
