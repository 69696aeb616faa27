package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/log"
	"github.com/digitalocean/go-qemu/qmp"

	"github.com/earendil-works/gondolin-containerd/vmm"
)

// DefaultBinary is QEMU's system emulator for this architecture.
const DefaultBinary = "qemu-system-x86_64"

// VM is a QEMU process running one guest.
type VM struct {
	// cmd is the QEMU this process started; nil for an adopted one
	// (Adopt), which pidfd watches and signals.
	cmd       *exec.Cmd
	pid       int
	pidfd     *os.File
	qmpSocket string
	console   string
	stderr    *tailBuffer

	done    chan struct{}
	exitErr error

	mu  sync.Mutex
	mon *qmp.SocketMonitor
}

var _ vmm.VM = (*VM)(nil)

// BinaryPath resolves the runtime config's qemu_path ("" for DefaultBinary)
// to the executable Start runs.
func BinaryPath(binary string) (string, error) {
	if binary == "" {
		binary = DefaultBinary
	}
	path, err := exec.LookPath(binary)
	if err != nil {
		return "", fmt.Errorf("QEMU (%s) is not installed: install Debian's qemu-system-x86 package (make deps) or set qemu_path in the runtime config: %w", binary, err)
	}
	return path, nil
}

// Start launches QEMU for cfg. It returns once the process runs and its
// monitor socket exists; the guest boots in the background.
func Start(ctx context.Context, binary string, cfg vmm.Config) (*VM, error) {
	path, err := BinaryPath(binary)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct{ what, path string }{{"kernel", cfg.Kernel}, {"initrd", cfg.Initrd}} {
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("guest %s %s is missing: build it with `make images` (and `make install`) or set %s_path in the runtime config: %w", f.what, f.path, f.what, err)
		}
	}
	machine, reason, err := vmm.DetectMachine(cfg.Machine, cfg.Kernel)
	if err != nil {
		return nil, err
	}
	cfg.Machine = machine
	qmpSocket := filepath.Join(cfg.StateDir, "qmp.sock")
	args, err := Args(cfg, qmpSocket)
	if err != nil {
		return nil, err
	}
	if dir := firmwareDir(path); dir != "" {
		args = append([]string{"-L", dir}, args...)
	}
	log.G(ctx).WithFields(log.Fields{"accel": cfg.Accelerator, "machine": machine, "machine_reason": reason}).Debugf("starting %s %v", path, args)

	vm := &VM{
		cmd:       exec.Command(path, args...),
		qmpSocket: qmpSocket,
		console:   cfg.ConsoleLog,
		stderr:    newTailBuffer(8 << 10),
		done:      make(chan struct{}),
	}
	vm.cmd.Stderr = vm.stderr
	vm.cmd.Stdout = vm.stderr
	// QEMU must not outlive the shim that manages it; containerd's cleanup
	// (shim delete) covers the case where the shim is killed.
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if cfg.Detached {
		// A VM pool's: the shim that takes it over watches it.
		vm.cmd.SysProcAttr.Pdeathsig = 0
	}
	if err := vm.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	vm.pid = vm.cmd.Process.Pid
	go func() {
		vm.exitErr = vm.cmd.Wait()
		close(vm.done)
	}()
	if cfg.Started != nil {
		if err := cfg.Started(vm.cmd.Process.Pid); err != nil {
			_ = vm.kill()
			<-vm.done
			return nil, err
		}
	}

	if err := vm.waitForSocket(ctx, qmpSocket, 10*time.Second); err != nil {
		_ = vm.kill()
		return nil, err
	}
	if cfg.Incoming != "" {
		if err := vm.loadState(ctx, cfg.Incoming); err != nil {
			_ = vm.kill()
			<-vm.done
			_ = vm.closeMonitor()
			return nil, err
		}
	}
	return vm, nil
}

// systemFirmwareDir is where a QEMU installed in /usr finds its firmware.
const systemFirmwareDir = "/usr/share/qemu"

// firmwareDir is the firmware directory of a QEMU unpacked elsewhere than
// /usr (PREFIX/usr/bin/qemu-system-x86_64 with PREFIX/usr/share/qemu), for
// -L: Debian's build looks only in /usr/share/qemu, which holds the
// firmware of the system's own QEMU, maybe of another version. "" when
// there is none or it is the system's.
func firmwareDir(binary string) string {
	dir := filepath.Join(filepath.Dir(binary), "..", "share", "qemu")
	if dir == systemFirmwareDir {
		return ""
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return ""
	}
	return dir
}

func (vm *VM) waitForSocket(ctx context.Context, path string, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-vm.done:
			return fmt.Errorf("qemu exited during start-up (%v): %s", vm.exitErr, vm.Stderr())
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("qemu did not create its monitor socket %s within %s: %s", path, timeout, vm.Stderr())
		case <-tick.C:
		}
	}
}

// Pid is QEMU's host process ID.
func (vm *VM) Pid() int { return vm.pid }

// Adopt takes over a QEMU another process started with Config.Detached:
// its monitor is a.StateDir/qmp.sock, and a.Pidfd (which the VM owns from
// then on) tells its end and carries its kill.
func Adopt(a vmm.Adopted) *VM {
	vm := &VM{
		pid:       a.Pid,
		pidfd:     a.Pidfd,
		qmpSocket: filepath.Join(a.StateDir, "qmp.sock"),
		console:   a.ConsoleLog,
		stderr:    newTailBuffer(8 << 10),
		done:      make(chan struct{}),
		exitErr:   vmm.ErrAdoptedExit,
	}
	vmm.WaitPidfd(a.Pidfd, vm.done)
	return vm
}

// Done is closed when QEMU has exited.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// ExitError is QEMU's exit status, valid once Done is closed.
func (vm *VM) ExitError() error {
	select {
	case <-vm.done:
		if vm.exitErr == nil {
			return nil
		}
		// An adopted QEMU's output went to the pool that started it.
		if stderr := vm.Stderr(); stderr != "" {
			return fmt.Errorf("%w: %s", vm.exitErr, stderr)
		}
		return vm.exitErr
	default:
		return nil
	}
}

// Stderr is the tail of what QEMU printed.
func (vm *VM) Stderr() string { return string(bytes.TrimSpace(vm.stderr.Bytes())) }

func (vm *VM) monitor() (*qmp.SocketMonitor, error) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.mon != nil {
		return vm.mon, nil
	}
	// The socket file exists from QEMU's bind(); until its listen() a
	// connect is refused. Under load that window is seen: try again.
	var mon *qmp.SocketMonitor
	var err error
	for deadline := time.Now().Add(2 * time.Second); ; {
		mon, err = qmp.NewSocketMonitor("unix", vm.qmpSocket, 2*time.Second)
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			break
		}
		select {
		case <-vm.done:
			return nil, fmt.Errorf("connect to QMP at %s: qemu exited: %s", vm.qmpSocket, vm.Stderr())
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err != nil {
		return nil, fmt.Errorf("connect to QMP at %s: %w", vm.qmpSocket, err)
	}
	if err := mon.Connect(); err != nil {
		return nil, fmt.Errorf("QMP handshake at %s: %w", vm.qmpSocket, err)
	}
	vm.mon = mon
	return mon, nil
}

// qmpTimeout bounds a QMP command: a QEMU process that is stopped or stuck
// accepts the connection in the kernel but never answers.
const qmpTimeout = 5 * time.Second

// execute runs a QMP command that takes no arguments.
func (vm *VM) execute(ctx context.Context, name string) error {
	_, err := vm.run(ctx, qmp.Command{Execute: name})
	return err
}

// run sends one QMP command and returns QEMU's answer.
func (vm *VM) run(ctx context.Context, cmd qmp.Command) ([]byte, error) {
	type result struct {
		out []byte
		err error
	}
	name := cmd.Execute
	command, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("QMP %s: %w", name, err)
	}
	resc := make(chan result, 1)
	go func() {
		mon, err := vm.monitor()
		var out []byte
		if err == nil {
			out, err = mon.Run(command)
		}
		resc <- result{out, err}
	}()
	timer := time.NewTimer(qmpTimeout)
	defer timer.Stop()
	select {
	case r := <-resc:
		if r.err != nil {
			return nil, fmt.Errorf("QMP %s: %w", name, r.err)
		}
		return r.out, nil
	case <-vm.done:
		return nil, fmt.Errorf("QMP %s: qemu exited: %v", name, vm.ExitError())
	case <-timer.C:
		return nil, fmt.Errorf("QMP %s: no answer within %s", name, qmpTimeout)
	case <-ctx.Done():
		return nil, fmt.Errorf("QMP %s: %w", name, ctx.Err())
	}
}

// Pause stops the guest's vCPUs (QMP stop).
func (vm *VM) Pause(ctx context.Context) error { return vm.execute(ctx, "stop") }

// Resume lets the guest run again (QMP cont).
func (vm *VM) Resume(ctx context.Context) error { return vm.execute(ctx, "cont") }

// Stop waits up to grace for QEMU to exit by itself (the guest powering
// off), then asks it to quit over QMP, then kills it. A guest whose kernel
// cannot power the machine off (no ACPI, as on microvm) halts instead and
// says so on the console; that ends the wait early.
func (vm *VM) Stop(ctx context.Context, grace time.Duration) error {
	select {
	case <-vm.done:
		return vm.closeMonitor()
	default:
	}
	if grace > 0 {
		vm.waitExitOrHalt(ctx, grace)
	}
	if err := vm.execute(ctx, "quit"); err != nil {
		log.G(ctx).WithError(err).Debug("qmp quit failed; killing qemu")
	}
	select {
	case <-vm.done:
	case <-time.After(2 * time.Second):
		_ = vm.kill()
		<-vm.done
	}
	return vm.closeMonitor()
}

// Kill sends QEMU SIGKILL and waits for it to exit: a few ms where the
// QMP quit Stop sends took 13-24 ms (QEMU stops the machine and its
// devices first), for nothing a VM whose guest has synced can lose.
func (vm *VM) Kill(ctx context.Context) error {
	select {
	case <-vm.done:
	default:
		if err := vm.kill(); err != nil {
			return fmt.Errorf("kill qemu (pid %d): %w", vm.Pid(), err)
		}
		select {
		case <-vm.done:
		case <-ctx.Done():
			return fmt.Errorf("kill qemu (pid %d): %w", vm.Pid(), ctx.Err())
		}
	}
	return vm.closeMonitor()
}

// haltedMarker is what Linux prints when it halts (reboot(2) with
// LINUX_REBOOT_CMD_HALT, or POWER_OFF on a machine it cannot power off).
var haltedMarker = []byte("reboot: System halted")

// waitExitOrHalt returns when QEMU exits, the guest console shows the
// kernel halted, the grace period ends or ctx is done.
func (vm *VM) waitExitOrHalt(ctx context.Context, grace time.Duration) {
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	w := newConsoleWatch(vm.console, haltedMarker)
	defer w.close()
	for {
		select {
		case <-vm.done:
			return
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
			if w.seen() {
				log.G(ctx).Debug("guest halted; quitting qemu")
				return
			}
		}
	}
}

// consoleWatch looks for a marker in what a console log file gains, starting
// a little before its current end (the marker may have just been written).
// It reads at most a bounded tail per call, so a guest flooding its console
// costs the host little.
type consoleWatch struct {
	f      *os.File
	off    int64
	marker []byte
	carry  []byte
}

const consoleWatchWindow = 4 << 10

func newConsoleWatch(path string, marker []byte) *consoleWatch {
	w := &consoleWatch{marker: marker}
	if path == "" {
		return w
	}
	f, err := os.Open(path)
	if err != nil {
		return w
	}
	w.f = f
	if st, err := f.Stat(); err == nil {
		w.off = max(0, st.Size()-consoleWatchWindow)
	}
	return w
}

func (w *consoleWatch) seen() bool {
	if w.f == nil {
		return false
	}
	st, err := w.f.Stat()
	if err != nil || st.Size() <= w.off {
		return false
	}
	if st.Size()-w.off > consoleWatchWindow {
		w.off, w.carry = st.Size()-consoleWatchWindow, nil
	}
	buf := make([]byte, st.Size()-w.off)
	n, _ := w.f.ReadAt(buf, w.off)
	w.off += int64(n)
	data := append(w.carry, buf[:n]...)
	if bytes.Contains(data, w.marker) {
		return true
	}
	if k := len(w.marker) - 1; len(data) > k {
		w.carry = append([]byte(nil), data[len(data)-k:]...)
	} else {
		w.carry = data
	}
	return false
}

func (w *consoleWatch) close() {
	if w.f != nil {
		w.f.Close()
	}
}

// Release closes the QMP connection for the process that adopts the VM.
func (vm *VM) Release() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.mon == nil {
		return nil
	}
	err := vm.mon.Disconnect()
	vm.mon = nil
	return err
}

func (vm *VM) kill() error {
	if vm.cmd == nil {
		return vmm.PidfdSignal(vm.pidfd, syscall.SIGKILL)
	}
	err := vm.cmd.Process.Kill()
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

func (vm *VM) closeMonitor() error {
	if !vm.mu.TryLock() {
		// A QMP call is still stuck on a dead QEMU; it ends with the
		// socket.
		return nil
	}
	defer vm.mu.Unlock()
	if vm.mon == nil {
		return nil
	}
	err := vm.mon.Disconnect()
	vm.mon = nil
	if err != nil {
		log.L.WithError(err).Debug("qmp disconnect")
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.buf...)
}
