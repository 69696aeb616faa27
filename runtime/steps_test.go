package runtime

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// A failing step undoes the steps before it in reverse, not itself and
// not those after it; its error keeps its kind and gains its name; a
// failing undo does not stop the others; the undos run under a context
// that the client's cancel does not reach.
func TestRunStepsUndoesInReverse(t *testing.T) {
	var log []string
	ctx, cancel := context.WithCancel(context.Background())
	mk := func(name string, fail error, undoErr error) step {
		return step{name: name, phase: name, run: func(context.Context) (undoFunc, error) {
			log = append(log, "do "+name)
			if fail != nil {
				cancel() // the client gives up as the step fails
				return nil, fail
			}
			if name == "b" {
				return nil, nil // nothing to undo
			}
			return func(ctx context.Context) error {
				if ctx.Err() != nil {
					t.Errorf("undo %s: context cancelled", name)
				}
				log = append(log, "undo "+name)
				return undoErr
			}, nil
		}}
	}
	timing := newPhases()
	err := runSteps(ctx, timing, []step{
		mk("a", nil, nil),
		mk("b", nil, nil),
		mk("c", nil, errors.New("undo of c failed")),
		mk("d", fmt.Errorf("no room: %w", errdefs.ErrResourceExhausted), nil),
		mk("e", nil, nil),
	})
	if !errdefs.IsResourceExhausted(err) || !strings.HasPrefix(err.Error(), "d: no room") {
		t.Errorf("error = %v", err)
	}
	want := []string{"do a", "do b", "do c", "do d", "undo c", "undo a"}
	if !slices.Equal(log, want) {
		t.Errorf("ran %q, want %q", log, want)
	}
	if _, ok := timing.fields["d_ms"]; ok {
		t.Error("the failed step was timed")
	}
	if _, ok := timing.fields["c_ms"]; !ok {
		t.Error("a step that succeeded was not timed")
	}
}

// Steps that all succeed undo nothing.
func TestRunStepsSuccess(t *testing.T) {
	undone := false
	err := runSteps(context.Background(), newPhases(), []step{{name: "a", phase: "a", run: func(context.Context) (undoFunc, error) {
		return func(context.Context) error { undone = true; return nil }, nil
	}}})
	if err != nil || undone {
		t.Fatalf("err %v, undone %v", err, undone)
	}
}
