package runtime

import (
	"context"

	"github.com/containerd/errdefs"
)

// The operations states of the init and of an exec share.

// stopped is what an exited init and an exited exec share: nothing to
// start, resize or wait for any more; their stdin can still be closed.
type stopped struct{}

func (stopped) name() string   { return "stopped" }
func (stopped) status() Status { return StatusStopped }

func (s stopped) start(_ context.Context, p *Process) (processState, uint32, error) {
	return nil, 0, p.refuse("start", s)
}

// kill: a signal for all may still find processes of the container (an
// init's exit ends them in the guest a moment later; an exec's leaves the
// others running); one for the process alone finds it gone, which
// containerd's clients take as "exited".
func (s stopped) kill(ctx context.Context, p *Process, signal uint32, all bool) error {
	if !all {
		return p.refuseWhy("signal", s, errdefs.ErrNotFound, "its process already finished")
	}
	return p.signal(ctx, signal, all)
}

func (s stopped) resizePty(_ context.Context, p *Process, _, _ uint32) error {
	return p.refuse("resize the terminal of", s)
}

func (stopped) closeIO(p *Process) error {
	p.closeInput()
	return nil
}

func (stopped) exited() processState { return nil }

// live is what a created and a running process share: a signal, a
// terminal size and the end of stdin go to it.
type live struct{}

func (live) kill(ctx context.Context, p *Process, signal uint32, all bool) error {
	return p.signal(ctx, signal, all)
}

func (live) resizePty(ctx context.Context, p *Process, width, height uint32) error {
	return p.resizeTerminal(ctx, width, height)
}

func (live) closeIO(p *Process) error {
	p.closeInput()
	return nil
}
