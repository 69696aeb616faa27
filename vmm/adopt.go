package vmm

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Adopted is a VM that another process started (Config.Detached) and
// handed over, a VM pool's: its processes are not this process's
// children, so their ends are seen, and signals sent, through pidfds,
// which a recycled PID can never redirect.
type Adopted struct {
	// Pid is the VMM's process and Pidfd a pidfd of it, which the
	// adopted VM owns from then on.
	Pid   int
	Pidfd *os.File
	// StateDir holds the VM's sockets now (they may have been renamed
	// there from where the VM was started).
	StateDir string
	// ConsoleLog is the console log a backend reads the guest's halt
	// from, as Config.ConsoleLog.
	ConsoleLog string
}

// ErrAdoptedExit is the exit error of an adopted process: its exit status
// went to the process that started it.
var ErrAdoptedExit = errors.New("exited (its exit status went to the VM pool that started it)")

// PidfdOpen returns a pidfd of pid, to hand over with the process.
func PidfdOpen(pid int) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid)), nil
}

// WaitPidfd closes done once the process of pidfd has exited (a pidfd
// polls readable then, whoever reaps the process). It holds a thread while
// it waits: one per adopted process.
func WaitPidfd(pidfd *os.File, done chan<- struct{}) {
	go func() {
		defer close(done)
		fds := []unix.PollFd{{Fd: int32(pidfd.Fd()), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, -1)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || n > 0 {
				return
			}
		}
	}()
}

// PidfdSignal sends sig to the process of pidfd; a process already gone
// is no error.
func PidfdSignal(pidfd *os.File, sig syscall.Signal) error {
	err := unix.PidfdSendSignal(int(pidfd.Fd()), sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("signal %s through its pidfd: %w", pidfd.Name(), err)
	}
	return nil
}
