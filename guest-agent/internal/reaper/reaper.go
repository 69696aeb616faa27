// Package reaper is the agent's only caller of wait4: one loop reaps every
// child (PID 1 inherits all orphans) and hands each exit to whoever started
// that pid. Nothing else in the agent may wait for children (no
// exec.Cmd.Wait), or exit statuses would be stolen.
package reaper

import (
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Exit is what a process left behind.
type Exit struct {
	Pid    int
	Status uint32 // exit code, or 128 + signal
	At     time.Time
}

// ExitStatus converts a wait status to a shell-style status: the exit code,
// or 128 + the signal number when the process was killed by a signal.
func ExitStatus(ws syscall.WaitStatus) uint32 {
	switch {
	case ws.Exited():
		return uint32(ws.ExitStatus())
	case ws.Signaled():
		return 128 + uint32(ws.Signal())
	default:
		return 255
	}
}

// Reaper dispatches exits by pid.
type Reaper struct {
	mu   sync.Mutex
	subs map[int]func(Exit)
	// Orphans counts reaped children nobody asked for.
	orphans int
}

// New returns a reaper; call Run to start reaping.
func New() *Reaper {
	return &Reaper{subs: map[int]func(Exit){}}
}

// Start runs start (which forks a child and returns its pid) while holding
// the dispatch lock and registers onExit for that pid, so an exit that
// happens before registration is not lost: the loop reaps it but waits for
// the lock before dispatching.
func (r *Reaper) Start(start func() (int, error), onExit func(Exit)) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := start()
	if err != nil {
		return 0, err
	}
	r.subs[pid] = onExit
	return pid, nil
}

// Handover makes onExit the one told of pid's exit, in place of the
// callback it was started with. It returns false, and changes nothing, if
// pid has already been reaped (its callback ran or is running) or was
// never started here.
func (r *Reaper) Handover(pid int, onExit func(Exit)) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.subs[pid]; !ok {
		return false
	}
	r.subs[pid] = onExit
	return true
}

// Run reaps children until stop is closed. It must run in the process that
// forks the children (the agent); as PID 1 it also reaps orphans.
func (r *Reaper) Run(stop <-chan struct{}) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGCHLD)
	defer signal.Stop(ch)
	for {
		r.reapAll()
		select {
		case <-ch:
		case <-stop:
			return
		}
	}
}

func (r *Reaper) reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD or nothing more to reap
		}
		if !ws.Exited() && !ws.Signaled() {
			continue
		}
		r.dispatch(Exit{Pid: pid, Status: ExitStatus(syscall.WaitStatus(ws)), At: time.Now()})
	}
}

func (r *Reaper) dispatch(e Exit) {
	r.mu.Lock()
	fn, ok := r.subs[e.Pid]
	if ok {
		delete(r.subs, e.Pid)
	} else {
		r.orphans++
	}
	r.mu.Unlock()
	if ok {
		fn(e)
	}
}

// Orphans returns how many unclaimed children were reaped.
func (r *Reaper) Orphans() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.orphans
}
