package runtime

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// Status is where a process is in its life.
type Status int

const (
	StatusCreated Status = iota
	StatusRunning
	StatusStopped
	StatusPaused
)

func (s Status) String() string {
	return [...]string{"created", "running", "stopped", "paused"}[s]
}

// processState is where a process is in its life (init_state.go,
// exec_state.go, deleted_state.go). Each operation dispatches on it: the
// state either does the operation, through the process's and container's
// mechanics, or refuses it with an error naming the state. start runs with
// the process's opMu held and returns the state that follows; the others
// change no state.
type processState interface {
	// name is the state in errors: created, running, paused, stopped,
	// deleted.
	name() string
	// status is the state as the task API reports it.
	status() Status
	start(ctx context.Context, p *Process) (next processState, pid uint32, err error)
	kill(ctx context.Context, p *Process, signal uint32, all bool) error
	resizePty(ctx context.Context, p *Process, width, height uint32) error
	closeIO(p *Process) error
	// exited is the state after the process has exited; nil if it had
	// exited already.
	exited() processState
}

// refuse is the error of an operation the process's state does not allow,
// naming the process and the state: a deleted process is not found, an
// operation at the wrong time a failed precondition.
func (p *Process) refuse(op string, st processState) error {
	var kind error = errdefs.ErrFailedPrecondition
	if _, gone := st.(deletedState); gone {
		kind = errdefs.ErrNotFound
	}
	return p.refuseWhy(op, st, kind, "")
}

// refuseWhy is refuse with an error kind and a reason of its own.
func (p *Process) refuseWhy(op string, st processState, kind error, why string) error {
	if why != "" {
		why = " (" + why + ")"
	}
	return fmt.Errorf("cannot %s %s: it is %s%s: %w", op, p, st.name(), why, kind)
}

// State is a snapshot of a process.
type State struct {
	Status     Status
	Pid        uint32
	Stdio      Stdio
	ExitStatus uint32
	ExitedAt   time.Time
}

// Process is one process of a container: its init or an exec.
type Process struct {
	c      *Container
	execID string
	stdio  Stdio
	io     *hostIO
	// guestPid is the process's PID inside the guest.
	guestPid uint32
	// stdinStream is the guest end of stdin, closed by CloseIO.
	stdinStream net.Conn
	stdinOnce   sync.Once
	// copies counts host-side output copies still running.
	copies sync.WaitGroup

	// opMu serializes what changes the process's state: Start, Pause,
	// Resume, the init's Delete and the recording of its exit (as runc's
	// shim holds its process lock through them). A second start waits for
	// the first and then finds the process running, and an exit is recorded
	// only once the start that returned the process's pid is done. Kill,
	// ResizePty, CloseIO and Exec change no state: they read it and act
	// without opMu, so that a wedged guest delays no exit.
	opMu sync.Mutex
	// mu guards what readers see: the state, the exit and guestPid.
	mu    sync.Mutex
	state processState
	exit  Exit
	// unreported says exit was recorded under opMu and is reported once
	// opMu is released (unlockOps).
	unreported bool
	exited     chan struct{}
}

func newProcess(c *Container, execID string, stdio Stdio, hio *hostIO) *Process {
	p := &Process{c: c, execID: execID, stdio: stdio, io: hio, exited: make(chan struct{})}
	if execID == "" {
		p.state = initCreated{}
	} else {
		p.state = execCreated{}
	}
	return p
}

// String names the process in errors: "container ID" for the init, "exec
// ID of container ID" for an exec.
func (p *Process) String() string {
	if p.execID == "" {
		return "container " + p.c.ID
	}
	return fmt.Sprintf("exec %s of container %s", p.execID, p.c.ID)
}

// attachStdio opens the process's stdio streams to the guest and starts
// copying. It returns which streams the agent must wait for.
func (p *Process) attachStdio(agent *agentConn) (_ *api.Stdio, retErr error) {
	var opened []net.Conn
	defer func() {
		if retErr != nil {
			for _, s := range opened {
				s.Close()
			}
		}
	}()
	open := func(kind api.StreamHeader_Kind) (net.Conn, error) {
		s, err := agent.openStdio(kind, p.c.ID, p.execID)
		if err == nil {
			opened = append(opened, s)
		}
		return s, err
	}
	want := &api.Stdio{}
	if p.io.stdin != nil {
		s, err := open(api.StreamHeader_STDIN)
		if err != nil {
			return nil, err
		}
		want.Stdin = true
		p.stdinStream = s
		go func() {
			// A closed stream (the process exited) ends the copy too.
			if err := p.io.stdin.copyTo(s); err != nil {
				log.L.WithError(err).Debug("stdin copy")
			}
			p.CloseStdin()
		}()
	}
	for _, out := range []struct {
		kind api.StreamHeader_Kind
		dst  io.WriteCloser
		set  *bool
	}{{api.StreamHeader_STDOUT, p.io.stdout, &want.Stdout}, {api.StreamHeader_STDERR, p.io.stderr, &want.Stderr}} {
		if out.dst == nil {
			continue
		}
		s, err := open(out.kind)
		if err != nil {
			return nil, err
		}
		*out.set = true
		p.copies.Add(1)
		go func(dst io.WriteCloser) {
			defer p.copies.Done()
			defer s.Close()
			if _, err := io.Copy(dst, s); err != nil {
				log.L.WithError(err).Debug("output copy")
			}
			// The guest closed the stream: the process's output has
			// ended. Close the host end now, as runc's shim does, so the
			// reader sees EOF: dockerd waits for it before it deletes
			// the task.
			if err := dst.Close(); err != nil {
				log.L.WithError(err).Debug("close output")
			}
		}(out.dst)
	}
	return want, nil
}

// wait follows the process in the guest until it exits, then records and
// reports the exit once its output has reached the host.
func (p *Process) wait(agent *agentConn) {
	status := uint32(128 + syscall.SIGKILL)
	exitedAt := time.Now()
	resp, err := agent.WaitProcess(context.Background(), &api.WaitProcessRequest{ContainerId: p.c.ID, ExecId: p.execID})
	if err != nil {
		log.L.WithError(err).WithField("container", p.c.ID).Warn("lost the process: the VM or its agent went away; reporting it killed")
		// The channel is gone, so the copies end once what they hold
		// is written; a host-side reader that stopped reading must not
		// keep the exit from being reported.
		p.waitCopies(lostOutputWait)
	} else {
		status = resp.ExitStatus
		if resp.ExitedAtUnixNano > 0 {
			exitedAt = time.Unix(0, resp.ExitedAtUnixNano)
		}
		// The agent closed the output streams before answering; the
		// copies end once the last bytes are written to the host side.
		p.copies.Wait()
	}
	p.setExited(status, exitedAt)
}

// lostOutputWait bounds how long the exit of a process whose VM went away
// waits for its output to reach the host.
const lostOutputWait = 2 * time.Second

// waitCopies waits for the output copies, at most d.
func (p *Process) waitCopies(d time.Duration) {
	done := make(chan struct{})
	go func() {
		p.copies.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		log.L.WithField("container", p.c.ID).Warnf("output of process %q not all written to the host within %s of losing its VM", p.execID, d)
	}
}

// closeInput is the client's "no more stdin": what the FIFO holds still
// reaches the process, which then sees EOF.
func (p *Process) closeInput() {
	if p.io != nil && p.io.stdin != nil && p.stdinStream != nil {
		p.io.stdin.closeInput()
		return
	}
	p.CloseStdin()
}

// CloseStdin ends the process's stdin at once: the guest sees EOF.
func (p *Process) CloseStdin() {
	p.stdinOnce.Do(func() {
		if p.stdinStream != nil {
			p.stdinStream.Close()
		}
	})
}

// setExited records the process's exit, once, and reports it; an exit
// after the first (the VM's end after the process's own) changes nothing.
func (p *Process) setExited(status uint32, at time.Time) {
	p.opMu.Lock()
	p.exitLocked(status, at)
	p.unlockOps()
}

// exitLocked records the exit with opMu held: the state moves on to
// stopped, unless the process has exited already. The exit is reported by
// unlockOps.
func (p *Process) exitLocked(status uint32, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	next := p.state.exited()
	if next == nil {
		return
	}
	p.state = next
	p.exit = Exit{ContainerID: p.c.ID, ExecID: p.execID, Pid: p.pid(), Status: status, ExitedAt: at}
	p.unreported = true
	close(p.exited)
}

// unlockOps releases opMu, then reports an exit recorded under it: the
// report takes the shim's locks, which a caller of Start holds while it
// waits for opMu.
func (p *Process) unlockOps() {
	p.mu.Lock()
	exit, report := p.exit, p.unreported
	p.unreported = false
	p.mu.Unlock()
	p.opMu.Unlock()
	if report {
		p.c.rt.cfg.OnExit(exit)
	}
}

// current is the process's state now.
func (p *Process) current() processState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// setState moves the process to next; the caller holds opMu.
func (p *Process) setState(next processState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state = next
}

// State reports the process's state. An exec that runs while its
// container is paused is paused with it.
func (p *Process) State() State {
	p.mu.Lock()
	st := State{Status: p.state.status(), Pid: p.pid(), Stdio: p.stdio, ExitStatus: p.exit.Status, ExitedAt: p.exit.ExitedAt}
	p.mu.Unlock()
	if st.Status == StatusRunning && p.execID != "" && p.c.paused() {
		st.Status = StatusPaused
	}
	return st
}

// pid is what the shim reports: the VMM's host PID for the init process
// (a host process that stands for the container, as hooks and tools
// expect), the guest PID for an exec. The caller holds mu.
func (p *Process) pid() uint32 {
	if p.execID == "" {
		return p.c.pid()
	}
	return p.guestPid
}

// Start lets a created process run: the init with its container's start
// (start.go), an exec in the guest.
func (p *Process) Start(ctx context.Context) (uint32, error) {
	p.opMu.Lock()
	defer p.unlockOps()
	next, pid, err := p.current().start(ctx, p)
	if err != nil {
		return 0, err
	}
	p.setState(next)
	return pid, nil
}

// Kill signals the process, or every process of its container with all.
// A SIGKILL for the init or for all must end the container whatever the
// guest does (signal).
func (p *Process) Kill(ctx context.Context, signal uint32, all bool) error {
	return p.current().kill(ctx, p, signal, all)
}

// ResizePty sets the window size of the process's terminal.
func (p *Process) ResizePty(ctx context.Context, width, height uint32) error {
	return p.current().resizePty(ctx, p, width, height)
}

// CloseIO is the client's "no more stdin": what the FIFO holds still
// reaches the process, which then sees EOF.
func (p *Process) CloseIO() error {
	return p.current().closeIO(p)
}

// Wait blocks until the process has exited.
func (p *Process) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-p.exited:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.exit, nil
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}

// startInGuest lets a created exec run in the guest.
func (p *Process) startInGuest(ctx context.Context) (uint32, error) {
	var resp *api.StartProcessResponse
	err := p.c.guestCall(ctx, "start process", func(ctx context.Context) (err error) {
		resp, err = p.c.pod.sb.agent.StartProcess(ctx, &api.StartProcessRequest{ContainerId: p.c.ID, ExecId: p.execID})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("start process %q of %s: %w", p.execID, p.c.ID, agentError(err))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.guestPid = resp.Pid
	return p.pid(), nil
}

// resizeTerminal sets the window size of the process's terminal in the
// guest.
func (p *Process) resizeTerminal(ctx context.Context, width, height uint32) error {
	if !p.stdio.Terminal {
		return fmt.Errorf("%s has no terminal: %w", p, errdefs.ErrFailedPrecondition)
	}
	return agentError(p.c.guestCall(ctx, "resize the terminal", func(ctx context.Context) error {
		_, err := p.c.pod.sb.agent.ResizePty(ctx, &api.ResizePtyRequest{ContainerId: p.c.ID, ExecId: p.execID, Width: width, Height: height})
		return err
	}))
}

// signal sends signal to the process, or with all to every process of its
// container. A SIGKILL for the init or for all must end the container
// whatever the guest does: if the guest does not answer
// (limits.agent_call_timeout), or the init has not exited that long after,
// the VM is stopped, which reports every process killed.
func (p *Process) signal(ctx context.Context, signal uint32, all bool) error {
	mustEnd := signal == uint32(syscall.SIGKILL) && (p.execID == "" || all)
	if p.c.pod.sb.vmGone() {
		// Nothing runs any more; the exits are on their way.
		if mustEnd {
			return nil
		}
		return fmt.Errorf("signal %d to %s: its VM has exited: %w", signal, p.c.ID, errdefs.ErrNotFound)
	}
	// The guest cannot act on a signal while its vCPUs are stopped: let
	// it run so that the signal is delivered, as a frozen runc container
	// is thawed for SIGKILL.
	if err := p.c.resumeForSignal(ctx); err != nil {
		if !mustEnd {
			return err
		}
		p.c.pod.stopVM(fmt.Sprintf("SIGKILL to a paused container whose VM does not resume (%v)", err))
		return nil
	}
	err := p.c.guestCall(ctx, "signal", func(ctx context.Context) error {
		_, err := p.c.pod.sb.agent.SignalProcess(ctx, &api.SignalProcessRequest{
			ContainerId: p.c.ID, ExecId: p.execID, Signal: signal, All: all,
		})
		return err
	})
	if mustEnd {
		if errdefs.IsUnavailable(err) && p.c.pod.sb.vmGone() {
			// The guest was wedged and its VM stopped: killed all the same.
			return nil
		}
		// Whatever the guest answers: one that refuses the SIGKILL (an
		// error, "not found" included, which containerd's clients take
		// as "already exited" and then wait for the exit) must not keep
		// the container running. An init that did exit reports it well
		// within the bound.
		go p.c.ensureInitExits()
	}
	if err != nil {
		return fmt.Errorf("signal %d to %s: %w", signal, p.c.ID, agentError(err))
	}
	return nil
}
