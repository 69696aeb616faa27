package runtime

import "context"

// deletedState is where an init or an exec ends, as in containerd's runc
// shim (cmd/containerd-shim-runc-v2/process/deleted_state.go): the process
// is gone, and every operation on it finds nothing. It is entered only
// from stopped, so the process's exit is recorded, and the task API still
// reports it stopped.
type deletedState struct{}

func (deletedState) name() string   { return "deleted" }
func (deletedState) status() Status { return StatusStopped }

func (s deletedState) start(_ context.Context, p *Process) (processState, uint32, error) {
	return nil, 0, p.refuse("start", s)
}

func (s deletedState) kill(_ context.Context, p *Process, _ uint32, _ bool) error {
	return p.refuse("signal", s)
}

func (s deletedState) resizePty(_ context.Context, p *Process, _, _ uint32) error {
	return p.refuse("resize the terminal of", s)
}

func (s deletedState) closeIO(p *Process) error {
	return p.refuse("close the stdin of", s)
}

func (deletedState) exited() processState { return nil }

func (s deletedState) pause(_ context.Context, p *Process) (processState, error) {
	return nil, p.refuse("pause", s)
}

func (s deletedState) resume(_ context.Context, p *Process) (processState, error) {
	return nil, p.refuse("resume", s)
}

func (s deletedState) exec(_ context.Context, p *Process, _ execRequest) (*Process, error) {
	return nil, p.refuse("exec in", s)
}

func (s deletedState) delete(p *Process) (processState, error) {
	return nil, p.refuse("delete", s)
}

func (s deletedState) deleteExec(_ context.Context, p *Process) (Exit, error) {
	return Exit{}, p.refuse("delete", s)
}
