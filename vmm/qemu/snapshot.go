package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// A VM's state is saved to and loaded from a file with the mapped-ram
// migration capability (QEMU >= 9.0): every RAM page has its place in the
// file, pages the guest never touched are holes, and loading skips them. A
// plain stream would make the loading QEMU read each zero page, and a read
// of a memfd hole allocates it: the restored VM would hold all its memory.
const migrationCaps = `{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"mapped-ram","state":true}]}}`

// migrationPoll is how often the state of a save or load is asked for.
const migrationPoll = 5 * time.Millisecond

// SaveState stops the guest and writes its state to path (replacing it).
// The VM stays paused; stop it afterwards.
func (vm *VM) SaveState(ctx context.Context, path string) error {
	if err := vm.run(ctx, "stop"); err != nil {
		return err
	}
	if _, err := vm.runJSON(ctx, migrationCaps); err != nil {
		return fmt.Errorf("save VM state: %w (QEMU 9.0 or later is needed)", err)
	}
	_ = os.Remove(path)
	if _, err := vm.runJSON(ctx, migrateCommand("migrate", path)); err != nil {
		return fmt.Errorf("save VM state to %s: %w", path, err)
	}
	return vm.waitMigration(ctx, "save VM state to "+path)
}

// loadState loads the state a VM started with Incoming was saved with, and
// lets the guest run.
func (vm *VM) loadState(ctx context.Context, path string) error {
	if _, err := vm.runJSON(ctx, migrationCaps); err != nil {
		return fmt.Errorf("load VM state: %w (QEMU 9.0 or later is needed)", err)
	}
	if _, err := vm.runJSON(ctx, migrateCommand("migrate-incoming", path)); err != nil {
		return fmt.Errorf("load VM state from %s: %w", path, err)
	}
	if err := vm.waitMigration(ctx, "load VM state from "+path); err != nil {
		return err
	}
	// The state was saved from a stopped VM: it loads stopped.
	return vm.run(ctx, "cont")
}

func migrateCommand(cmd, path string) string {
	args, _ := json.Marshal(map[string]string{"uri": "file:" + filepath.Clean(path)})
	return `{"execute":"` + cmd + `","arguments":` + string(args) + `}`
}

// waitMigration polls query-migrate until the save or load completed or
// failed. QEMU's own error is quoted on failure.
func (vm *VM) waitMigration(ctx context.Context, what string) error {
	for {
		out, err := vm.runJSON(ctx, `{"execute":"query-migrate"}`)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		var st struct {
			Return struct {
				Status    string `json:"status"`
				ErrorDesc string `json:"error-desc"`
			} `json:"return"`
		}
		if err := json.Unmarshal(out, &st); err != nil {
			return fmt.Errorf("%s: query-migrate answered %q: %w", what, out, err)
		}
		switch st.Return.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("%s: %s: %s %s", what, st.Return.Status, st.Return.ErrorDesc, vm.Stderr())
		}
		select {
		case <-vm.done:
			return fmt.Errorf("%s: qemu exited: %v", what, vm.ExitError())
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(migrationPoll):
		}
	}
}

// WaitChannelOpen returns once the guest has opened the virtio-serial port
// of the chardev called label (QMP query-chardev's frontend-open): the
// agent does that when it is ready and waits for the host.
func (vm *VM) WaitChannelOpen(ctx context.Context, label string) error {
	for {
		out, err := vm.runJSON(ctx, `{"execute":"query-chardev"}`)
		if err != nil {
			return err
		}
		var st struct {
			Return []struct {
				Label        string `json:"label"`
				FrontendOpen bool   `json:"frontend-open"`
			} `json:"return"`
		}
		if err := json.Unmarshal(out, &st); err != nil {
			return fmt.Errorf("query-chardev answered %q: %w", out, err)
		}
		for _, c := range st.Return {
			if c.Label == label && c.FrontendOpen {
				return nil
			}
		}
		select {
		case <-vm.done:
			return fmt.Errorf("qemu exited before the guest opened %s: %v", label, vm.ExitError())
		case <-ctx.Done():
			return fmt.Errorf("waiting for the guest to open %s: %w", label, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
