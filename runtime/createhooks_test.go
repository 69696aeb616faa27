package runtime

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// hooksCreation is a create whose spec has hooks: createRuntime runs
// createCmd, poststop appends to a file; it returns that file.
func hooksCreation(t *testing.T, createCmd string) (*creation, string) {
	t.Helper()
	marker := filepath.Join(t.TempDir(), "poststop")
	c := &Container{ID: "c1", Bundle: t.TempDir(), spec: &specs.Spec{Hooks: &specs.Hooks{
		CreateRuntime: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", createCmd}}},
		Poststop:      []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "echo ran >>" + marker}}},
	}}}
	c.pod = newPod(nil, c)
	return &creation{c: c}, marker
}

// A create that fails once the hooks have run runs the poststop hooks, so
// that what the hooks set up (a CNI network) is taken down, as runc does;
// so does a create whose own hook fails.
func TestCreateHooksUndoRunsPoststop(t *testing.T) {
	ctx := context.Background()
	cr, marker := hooksCreation(t, "true")
	undo, err := cr.createHooks(ctx)
	if err != nil || undo == nil {
		t.Fatalf("createHooks: undo %v, %v", undo, err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("poststop ran before anything failed")
	}
	if err := undo(ctx); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "ran\n" {
		t.Errorf("poststop after a later step failed: %q, %v", b, err)
	}

	cr, marker = hooksCreation(t, "exit 3")
	if _, err := cr.createHooks(ctx); err == nil {
		t.Fatal("a failing createRuntime hook did not fail the create")
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "ran\n" {
		t.Errorf("poststop after a createRuntime hook failed: %q, %v", b, err)
	}
}
