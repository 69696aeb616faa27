package runtime

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The states of a container's init, as containerd's runc shim has them
// (cmd/containerd-shim-runc-v2/process/init_state.go). The container's own
// operations (start, pause, resume, exec, delete) dispatch on its init's
// state too.
//
//	        Start            Pause
//	created ─────▶ running ◀─────▶ paused
//	   │              │    Resume     │
//	   │ exit, or     │ exit          │ exit
//	   │ Delete       ▼               │
//	   └─(killed)─▶ stopped ◀─────────┘
//	                  │ Delete
//	                  ▼
//	               deleted
//
// A signal to a paused container resumes it first (signal), so that the
// guest can act on it.

// initState is a state of a container's init.
type initState interface {
	processState
	// pause and resume stop and restart the VM's vCPUs; they run with
	// opMu held and return the state that follows.
	pause(ctx context.Context, p *Process) (processState, error)
	resume(ctx context.Context, p *Process) (processState, error)
	// exec adds a process to the container.
	exec(ctx context.Context, p *Process, req execRequest) (*Process, error)
	// delete lets the container go: it runs with opMu held and returns
	// the state that follows; Delete then tears the container down.
	delete(p *Process) (processState, error)
}

// execRequest is a process to add to a container.
type execRequest struct {
	id    string
	spec  *specs.Process
	stdio Stdio
}

// killedStatus is the exit status of a process ended by SIGKILL.
const killedStatus = 128 + uint32(unix.SIGKILL)

// initCreated: the init exists in the guest and waits for Start.
type initCreated struct{ live }

func (initCreated) name() string   { return "created" }
func (initCreated) status() Status { return StatusCreated }

func (initCreated) start(ctx context.Context, p *Process) (processState, uint32, error) {
	pid, err := p.c.startInit(ctx)
	if err != nil {
		return nil, 0, err
	}
	return initRunning{}, pid, nil
}

func (initCreated) exited() processState { return initStopped{} }

func (s initCreated) pause(_ context.Context, p *Process) (processState, error) {
	return nil, p.refuse("pause", s)
}

func (s initCreated) resume(_ context.Context, p *Process) (processState, error) {
	return nil, p.refuse("resume", s)
}

func (initCreated) exec(ctx context.Context, p *Process, req execRequest) (*Process, error) {
	return p.c.addExec(ctx, req)
}

func (initCreated) delete(p *Process) (processState, error) {
	// Never started: it ends as runc ends it, killed.
	p.exitLocked(killedStatus, time.Now())
	return deletedState{}, nil
}

// initRunning: the init runs.
type initRunning struct{ live }

func (initRunning) name() string   { return "running" }
func (initRunning) status() Status { return StatusRunning }

func (s initRunning) start(_ context.Context, p *Process) (processState, uint32, error) {
	return nil, 0, p.refuse("start", s)
}

func (initRunning) exited() processState { return initStopped{} }

func (initRunning) pause(ctx context.Context, p *Process) (processState, error) {
	if err := p.c.pauseVM(ctx); err != nil {
		return nil, err
	}
	return initPaused{}, nil
}

func (s initRunning) resume(_ context.Context, p *Process) (processState, error) {
	return nil, p.refuse("resume", s)
}

func (initRunning) exec(ctx context.Context, p *Process, req execRequest) (*Process, error) {
	return p.c.addExec(ctx, req)
}

func (s initRunning) delete(p *Process) (processState, error) {
	return nil, p.refuseWhy("delete", s, errdefs.ErrFailedPrecondition, "stop it first")
}

// initPaused: the VM's vCPUs are stopped, and every process with them.
type initPaused struct{}

func (initPaused) name() string   { return "paused" }
func (initPaused) status() Status { return StatusPaused }

func (s initPaused) start(_ context.Context, p *Process) (processState, uint32, error) {
	return nil, 0, p.refuse("start", s)
}

func (initPaused) kill(ctx context.Context, p *Process, signal uint32, all bool) error {
	return p.signal(ctx, signal, all)
}

func (s initPaused) resizePty(_ context.Context, p *Process, _, _ uint32) error {
	return p.refuse("resize the terminal of", s)
}

func (initPaused) closeIO(p *Process) error {
	p.closeInput()
	return nil
}

// exited: only the VM's end ends a paused init (its vCPUs do not run), so
// there is nothing left to resume.
func (initPaused) exited() processState { return initStopped{} }

func (s initPaused) pause(_ context.Context, p *Process) (processState, error) {
	return nil, p.refuse("pause", s)
}

func (initPaused) resume(ctx context.Context, p *Process) (processState, error) {
	if err := p.c.resumeVM(ctx); err != nil {
		return nil, err
	}
	return initRunning{}, nil
}

func (s initPaused) exec(_ context.Context, p *Process, _ execRequest) (*Process, error) {
	return nil, p.refuse("exec in", s)
}

func (s initPaused) delete(p *Process) (processState, error) {
	return nil, p.refuseWhy("delete", s, errdefs.ErrFailedPrecondition, "stop it first")
}

// initStopped: the init has exited; the container waits for Delete.
type initStopped struct{ stopped }

func (s initStopped) pause(_ context.Context, p *Process) (processState, error) {
	return nil, p.refuse("pause", s)
}

func (s initStopped) resume(_ context.Context, p *Process) (processState, error) {
	return nil, p.refuse("resume", s)
}

func (s initStopped) exec(_ context.Context, p *Process, _ execRequest) (*Process, error) {
	why := fmt.Sprintf("not running: its process exited with status %d", p.State().ExitStatus)
	return nil, p.refuseWhy("exec in", s, errdefs.ErrFailedPrecondition, why)
}

func (initStopped) delete(*Process) (processState, error) {
	return deletedState{}, nil
}
