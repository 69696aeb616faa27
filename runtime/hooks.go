package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// OCI hooks run on the host, as runc runs them, with the container's state
// on stdin. The state's pid is the VMM, which lives in the container's
// network namespace: a hook that configures /proc/<pid>/ns/net (Docker's
// libnetwork-setkey, CNI-style hooks) configures the namespace the shim
// dials the container's egress from.

// hookState is the state JSON a hook reads on stdin.
func hookState(spec *specs.Spec, id, bundle string, status specs.ContainerState, pid int) ([]byte, error) {
	st := specs.State{
		Version:     specs.Version,
		ID:          id,
		Status:      status,
		Pid:         pid,
		Bundle:      bundle,
		Annotations: spec.Annotations,
	}
	return json.Marshal(st)
}

// runHooks runs hooks in order and stops at the first failure, whose error
// carries the hook's output.
func runHooks(ctx context.Context, kind string, hooks []specs.Hook, state []byte) error {
	for i, h := range hooks {
		if err := runHook(ctx, h, state); err != nil {
			return fmt.Errorf("%s hook #%d (%s): %w", kind, i, h.Path, err)
		}
	}
	return nil
}

// runHooksLogged runs hooks whose failure must not fail the operation
// (poststart, poststop): failures are logged.
func runHooksLogged(ctx context.Context, kind string, hooks []specs.Hook, state []byte) {
	for i, h := range hooks {
		if err := runHook(ctx, h, state); err != nil {
			log.G(ctx).WithError(err).Warnf("%s hook #%d (%s) failed", kind, i, h.Path)
		}
	}
}

// defaultHookTimeout bounds a hook without a timeout of its own, so a hung
// hook cannot hang the create.
const defaultHookTimeout = 2 * time.Minute

func runHook(ctx context.Context, h specs.Hook, state []byte) error {
	timeout := defaultHookTimeout
	if h.Timeout != nil {
		if *h.Timeout <= 0 {
			return fmt.Errorf("timeout %d: must be positive", *h.Timeout)
		}
		timeout = time.Duration(*h.Timeout) * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.Path)
	if len(h.Args) > 0 {
		cmd.Args = h.Args
	}
	cmd.Env = h.Env
	cmd.Stdin = bytes.NewReader(state)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("timed out after %s; output: %q", timeout, strings.TrimSpace(out.String()))
	}
	if err != nil {
		return fmt.Errorf("%w; output: %q", err, strings.TrimSpace(out.String()))
	}
	return nil
}
