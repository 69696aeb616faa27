package runtime

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestHooksGetStateAndFailClearly(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "state.json")
	spec := &specs.Spec{Annotations: map[string]string{"a": "b"}}
	state, err := hookState(spec, "c1", "/bundle", specs.StateCreating, 42)
	if err != nil {
		t.Fatal(err)
	}
	ok := specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "cat > " + out + "; echo $X >> " + out + ".env"}, Env: []string{"X=y"}}
	fail := specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", "echo no network for you >&2; exit 3"}}
	if err := runHooks(context.Background(), "createRuntime", []specs.Hook{ok}, state); err != nil {
		t.Fatal(err)
	}
	var got specs.State
	b, _ := os.ReadFile(out)
	if err := json.Unmarshal(b, &got); err != nil || got.ID != "c1" || got.Pid != 42 || got.Bundle != "/bundle" || got.Status != specs.StateCreating || got.Annotations["a"] != "b" {
		t.Fatalf("hook saw state %s (%v)", b, err)
	}
	if env, _ := os.ReadFile(out + ".env"); strings.TrimSpace(string(env)) != "y" {
		t.Fatalf("hook env: %q", env)
	}
	err = runHooks(context.Background(), "createRuntime", []specs.Hook{ok, fail}, state)
	if err == nil || !strings.Contains(err.Error(), "createRuntime hook #1") || !strings.Contains(err.Error(), "no network for you") {
		t.Fatalf("failing hook: %v", err)
	}
	one := 1
	slow := specs.Hook{Path: "/bin/sleep", Args: []string{"sleep", "10"}, Timeout: &one}
	if err := runHooks(context.Background(), "prestart", []specs.Hook{slow}, state); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("slow hook: %v", err)
	}
}
