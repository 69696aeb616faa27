package runtime

import (
	"context"

	"github.com/containerd/errdefs"
)

// The states of an exec, as containerd's runc shim has them
// (cmd/containerd-shim-runc-v2/process/exec_state.go). An exec has no
// paused state of its own: it is paused with its container, and reported
// so (Process.State).
//
//	        Start
//	created ─────▶ running
//	   │              │ exit
//	   │ exit         ▼
//	   └────────▶ stopped
//	   │              │ DeleteExec
//	   │ DeleteExec   ▼
//	   └────────▶ deleted

// execState is a state of an exec.
type execState interface {
	processState
	// deleteExec forgets the exec in the guest, waits for its exit and
	// moves it to deleted. It runs without opMu: the exit of a created
	// exec comes with the guest's answer, recorded under opMu.
	deleteExec(ctx context.Context, p *Process) (Exit, error)
}

// execCreated: the exec exists in the guest and waits for Start.
type execCreated struct{ live }

func (execCreated) name() string   { return "created" }
func (execCreated) status() Status { return StatusCreated }

func (execCreated) start(ctx context.Context, p *Process) (processState, uint32, error) {
	pid, err := p.startInGuest(ctx)
	if err != nil {
		return nil, 0, err
	}
	return execRunning{}, pid, nil
}

func (execCreated) exited() processState { return execStopped{} }

// deleteExec: the agent kills an exec that never started and forgets it,
// so that its ID can be used again.
func (execCreated) deleteExec(ctx context.Context, p *Process) (Exit, error) {
	return p.c.removeExec(ctx, p)
}

// execRunning: the exec runs.
type execRunning struct{ live }

func (execRunning) name() string   { return "running" }
func (execRunning) status() Status { return StatusRunning }

func (s execRunning) start(_ context.Context, p *Process) (processState, uint32, error) {
	return nil, 0, p.refuse("start", s)
}

func (execRunning) exited() processState { return execStopped{} }

func (s execRunning) deleteExec(_ context.Context, p *Process) (Exit, error) {
	return Exit{}, p.refuseWhy("delete", s, errdefs.ErrFailedPrecondition, "stop it first")
}

// execStopped: the exec has exited and waits for DeleteExec.
type execStopped struct{ stopped }

func (execStopped) deleteExec(ctx context.Context, p *Process) (Exit, error) {
	return p.c.removeExec(ctx, p)
}
