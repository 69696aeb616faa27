package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// A VM's state is saved to and loaded from a file with the mapped-ram
// migration capability (QEMU >= 9.0): every RAM page has its place in the
// file, pages the guest never touched are holes, and loading skips them. A
// plain stream would make the loading QEMU read each zero page, and a read
// of a memfd hole allocates it: the restored VM would hold all its memory.
var migrationCaps = qmp.Command{Execute: "migrate-set-capabilities", Args: map[string]any{
	"capabilities": []map[string]any{{"capability": "mapped-ram", "state": true}},
}}

// migrationPoll is how often the state of a save or load is asked for.
const migrationPoll = 5 * time.Millisecond

// SaveState stops the guest and writes its state to path (replacing it).
// The VM stays paused; stop it afterwards.
func (vm *VM) SaveState(ctx context.Context, path string) error {
	if err := vm.execute(ctx, "stop"); err != nil {
		return err
	}
	if _, err := vm.run(ctx, migrationCaps); err != nil {
		return fmt.Errorf("save VM state: %w (QEMU 9.0 or later is needed)", err)
	}
	_ = os.Remove(path)
	if _, err := vm.run(ctx, migrateCommand("migrate", path)); err != nil {
		return fmt.Errorf("save VM state to %s: %w", path, err)
	}
	return vm.waitMigration(ctx, "save VM state to "+path)
}

// loadState loads the state a VM started with Incoming was saved with, and
// lets the guest run.
func (vm *VM) loadState(ctx context.Context, path string) error {
	if _, err := vm.run(ctx, migrationCaps); err != nil {
		return fmt.Errorf("load VM state: %w (QEMU 9.0 or later is needed)", err)
	}
	if _, err := vm.run(ctx, migrateCommand("migrate-incoming", path)); err != nil {
		return fmt.Errorf("load VM state from %s: %w", path, err)
	}
	if err := vm.waitMigration(ctx, "load VM state from "+path); err != nil {
		return err
	}
	// The state was saved from a stopped VM: it loads stopped.
	return vm.execute(ctx, "cont")
}

// migrateCommand is migrate or migrate-incoming (cmd) to or from a file.
func migrateCommand(cmd, path string) qmp.Command {
	return qmp.Command{Execute: cmd, Args: map[string]string{"uri": "file:" + filepath.Clean(path)}}
}

// waitMigration polls query-migrate until the save or load completed or
// failed. QEMU's own error is quoted on failure.
func (vm *VM) waitMigration(ctx context.Context, what string) error {
	var st struct {
		Status    string `json:"status"`
		ErrorDesc string `json:"error-desc"`
	}
	err := vm.poll(ctx, "query-migrate", migrationPoll, &st, func() (bool, error) {
		switch st.Status {
		case "completed":
			return true, nil
		case "failed", "cancelled":
			return true, fmt.Errorf("%s: %s %s", st.Status, st.ErrorDesc, vm.Stderr())
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// WaitChannelOpen returns once the guest has opened the agent channel's
// virtio-serial port (QMP query-chardev's frontend-open of its chardev):
// the agent does that when it is ready and waits for the host.
func (vm *VM) WaitChannelOpen(ctx context.Context) error {
	var chardevs []struct {
		Label        string `json:"label"`
		FrontendOpen bool   `json:"frontend-open"`
	}
	err := vm.poll(ctx, "query-chardev", 20*time.Millisecond, &chardevs, func() (bool, error) {
		for _, c := range chardevs {
			if c.Label == channelChardev && c.FrontendOpen {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the guest to open the agent channel: %w", err)
	}
	return nil
}

// HandOffChannel closes the host's end of the agent channel and waits
// for the guest to close and reopen the port, told by QEMU's
// VSERPORT_CHANGE events (polling the port's state could miss a quick
// close and reopen). QEMU sends at most one such event a second per port
// and coalesces those in between into the last state: the close may never
// be reported, only the open after it, up to a second late. The first
// open reported after closeHost is the reopen: until closeHost nothing
// changed the port's state within a second (the agent opens it once per
// session), so no event from before it is still pending.
func (vm *VM) HandOffChannel(ctx context.Context, closeHost func() error) error {
	mon, err := vm.monitor()
	if err != nil {
		return err
	}
	events, err := mon.Events(ctx)
	if err != nil {
		return fmt.Errorf("QMP events: %w", err)
	}
	changes := make(chan bool, 8)
	// Once listened to, events must be read until the monitor is
	// closed, or its reader blocks and commands get no answer.
	go func() {
		for e := range events {
			if e.Event != "VSERPORT_CHANGE" || e.Data["id"] != channelPort {
				continue
			}
			open, _ := e.Data["open"].(bool)
			select {
			case changes <- open:
			default:
			}
		}
	}()
	if err := closeHost(); err != nil {
		return err
	}
	for {
		select {
		case open := <-changes:
			if open {
				return nil
			}
		case <-vm.done:
			return fmt.Errorf("qemu exited: %v", vm.ExitError())
		case <-ctx.Done():
			return fmt.Errorf("waiting for the agent to reopen its channel: %w", ctx.Err())
		}
	}
}

// poll runs the QMP command cmd every interval, decoding what it returns
// into ret, until check says it is done (or failed), QEMU exits or ctx
// ends.
func (vm *VM) poll(ctx context.Context, cmd string, interval time.Duration, ret any, check func() (bool, error)) error {
	for {
		out, err := vm.run(ctx, qmp.Command{Execute: cmd})
		if err != nil {
			return err
		}
		answer := struct {
			Return any `json:"return"`
		}{ret}
		if err := json.Unmarshal(out, &answer); err != nil {
			return fmt.Errorf("%s answered %q: %w", cmd, out, err)
		}
		if done, err := check(); done || err != nil {
			return err
		}
		select {
		case <-vm.done:
			return fmt.Errorf("qemu exited: %v", vm.ExitError())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// CanSaveState tells whether the QEMU at binary (as BinaryPath resolves it)
// can save and load a VM with virtio-fs devices: QEMU 9.0 added both the
// mapped-ram capability and migration of vhost-user-fs (with a virtiofsd
// that hands over its state). The error says which version was found.
func CanSaveState(ctx context.Context, binary string) error {
	path, err := BinaryPath(binary)
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return fmt.Errorf("%s --version: %w", path, err)
	}
	major, minor, err := parseVersion(string(out))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if major < 9 {
		return fmt.Errorf("%s is QEMU %d.%d: saving a VM with virtio-fs needs QEMU 9.0 or later", path, major, minor)
	}
	return nil
}

// parseVersion reads "QEMU emulator version 10.0.2 (Debian …)".
func parseVersion(out string) (major, minor int, err error) {
	first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	bad := fmt.Errorf("not a QEMU version: --version printed %q (expected \"QEMU emulator version X.Y.Z\")", first)
	_, v, ok := strings.Cut(first, "emulator version ")
	if !ok {
		return 0, 0, bad
	}
	v, _, _ = strings.Cut(v, " ")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, bad
	}
	if major, err = strconv.Atoi(parts[0]); err != nil {
		return 0, 0, bad
	}
	if minor, err = strconv.Atoi(parts[1]); err != nil {
		return 0, 0, bad
	}
	return major, minor, nil
}
