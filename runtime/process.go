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

	mu     sync.Mutex
	status Status
	exit   Exit
	exited chan struct{}
}

func newProcess(c *Container, execID string, stdio Stdio, hio *hostIO) *Process {
	return &Process{c: c, execID: execID, stdio: stdio, io: hio, exited: make(chan struct{})}
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

// CloseIO is the client's "no more stdin": what the FIFO holds still
// reaches the process, which then sees EOF.
func (p *Process) CloseIO() {
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

func (p *Process) setExited(status uint32, at time.Time) {
	p.mu.Lock()
	if p.status == StatusStopped {
		p.mu.Unlock()
		return
	}
	p.status = StatusStopped
	p.exit = Exit{ContainerID: p.c.ID, ExecID: p.execID, Pid: p.pid(), Status: status, ExitedAt: at}
	exit := p.exit
	close(p.exited)
	p.mu.Unlock()
	p.c.rt.cfg.OnExit(exit)
}

// State reports the process's state.
func (p *Process) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	status := p.status
	if status == StatusRunning && p.c.paused() {
		status = StatusPaused
	}
	return State{Status: status, Pid: p.pid(), Stdio: p.stdio, ExitStatus: p.exit.Status, ExitedAt: p.exit.ExitedAt}
}

// pid is what the shim reports: the VMM's host PID for the init process
// (a host process that stands for the container, as hooks and tools
// expect), the guest PID for an exec.
func (p *Process) pid() uint32 {
	if p.execID == "" {
		return p.c.pid()
	}
	return p.guestPid
}

// Start lets a created process run.
func (p *Process) Start(ctx context.Context) (uint32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status != StatusCreated {
		return 0, fmt.Errorf("process %q of %s is %s, not created: %w", p.execID, p.c.ID, p.status, errdefs.ErrFailedPrecondition)
	}
	var resp *api.StartProcessResponse
	err := p.c.guestCall(ctx, "start process", func(ctx context.Context) (err error) {
		resp, err = p.c.sb.agent.StartProcess(ctx, &api.StartProcessRequest{ContainerId: p.c.ID, ExecId: p.execID})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("start process %q of %s: %w", p.execID, p.c.ID, agentError(err))
	}
	p.guestPid = resp.Pid
	p.status = StatusRunning
	return p.pid(), nil
}

// ResizePty sets the window size of the process's terminal.
func (p *Process) ResizePty(ctx context.Context, width, height uint32) error {
	if !p.stdio.Terminal {
		return fmt.Errorf("process %q of %s has no terminal: %w", p.execID, p.c.ID, errdefs.ErrFailedPrecondition)
	}
	return agentError(p.c.guestCall(ctx, "resize the terminal", func(ctx context.Context) error {
		_, err := p.c.sb.agent.ResizePty(ctx, &api.ResizePtyRequest{ContainerId: p.c.ID, ExecId: p.execID, Width: width, Height: height})
		return err
	}))
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

// Kill signals the process, or every process of its container with all.
// A SIGKILL for the init or for all must end the container whatever the
// guest does: if the guest does not answer (limits.agent_call_timeout), or
// the init has not exited that long after, the VM is stopped, which
// reports every process killed.
func (p *Process) Kill(ctx context.Context, signal uint32, all bool) error {
	p.mu.Lock()
	stopped := p.status == StatusStopped
	p.mu.Unlock()
	if stopped && !all {
		return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
	}
	mustEnd := signal == uint32(syscall.SIGKILL) && (p.execID == "" || all)
	if p.c.sb.vmGone() {
		// Nothing runs any more; the exits are on their way.
		if mustEnd {
			return nil
		}
		return fmt.Errorf("signal %d to %s: its VM has exited: %w", signal, p.c.ID, errdefs.ErrNotFound)
	}
	if p.c.paused() {
		// The guest cannot act on a signal while its vCPUs are stopped:
		// let it run so that the signal is delivered, as a frozen runc
		// container is thawed for SIGKILL.
		if err := p.c.Resume(ctx); err != nil {
			if !mustEnd {
				return err
			}
			p.c.stopVM(fmt.Sprintf("SIGKILL to a paused container whose VM does not resume (%v)", err))
			return nil
		}
	}
	err := p.c.guestCall(ctx, "signal", func(ctx context.Context) error {
		_, err := p.c.sb.agent.SignalProcess(ctx, &api.SignalProcessRequest{
			ContainerId: p.c.ID, ExecId: p.execID, Signal: signal, All: all,
		})
		return err
	})
	if mustEnd {
		if errdefs.IsUnavailable(err) && p.c.sb.vmGone() {
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
