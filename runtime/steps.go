package runtime

import (
	"context"
	"fmt"

	"github.com/containerd/log"
)

// A long operation that makes things (a create) is a list of steps. Each
// step returns how to undo what it made, and when a later step fails the
// undos of the steps that succeeded run in reverse: so each step reads as
// what it makes and how that goes again, and the order of the undos is the
// order of the steps, kept in one place.

// step is one named step.
type step struct {
	// name says what the step does; the error of a step that fails is
	// wrapped with it.
	name string
	// phase names the step's time in the operation's log line.
	phase string
	// run does the step and returns its undo, nil for nothing to undo.
	run func(ctx context.Context) (undoFunc, error)
}

// undoFunc undoes what a step made. It runs to its end even when the
// operation's client has gone: its ctx is not cancelled.
type undoFunc func(ctx context.Context) error

// runSteps runs steps in order and records each one's time in timing. When
// one fails, the undos of the steps before it run in reverse order (a
// failed undo is logged and the next one runs) and the step's error is
// returned, wrapped with its name.
func runSteps(ctx context.Context, timing *phases, steps []step) error {
	var done []step
	var undos []undoFunc
	for _, s := range steps {
		undo, err := s.run(ctx)
		if err != nil {
			unwind(context.WithoutCancel(ctx), done, undos)
			return fmt.Errorf("%s: %w", s.name, err)
		}
		if undo != nil {
			done, undos = append(done, s), append(undos, undo)
		}
		timing.done(s.phase)
	}
	return nil
}

// unwind runs undos in reverse order; undos[i] is that of done[i].
func unwind(ctx context.Context, done []step, undos []undoFunc) {
	for i := len(undos) - 1; i >= 0; i-- {
		if err := undos[i](ctx); err != nil {
			log.G(ctx).WithError(err).Warnf("undo %s", done[i].name)
		}
	}
}
