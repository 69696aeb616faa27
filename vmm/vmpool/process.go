package vmpool

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrRunning says another pool already serves the socket.
var ErrRunning = errors.New("a VM pool already serves this socket")

// Listen takes the pool's lock (socket + ".lock") and listens on socket,
// which only root can open. The lock is held until release; ErrRunning
// when another process holds it.
func Listen(socket string) (_ *net.UnixListener, release func(), retErr error) {
	lock, err := os.OpenFile(socket+".lock", os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open the VM pool's lock: %w", err)
	}
	defer func() {
		if retErr != nil {
			lock.Close()
		}
	}()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, nil, ErrRunning
		}
		return nil, nil, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	// A socket left by a pool that died: nobody serves it.
	_ = os.Remove(socket)
	old := unix.Umask(0o177)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", socket, err)
	}
	l.SetUnlinkOnClose(true)
	return l, func() { lock.Close() }, nil
}

// Spawn starts a pool process, argv, detached from this one (its own
// session; its output appended to logPath) and does not wait for it.
func Spawn(argv []string, logPath string) error {
	out, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("open the VM pool's log: %w", err)
	}
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the VM pool %v: %w", argv, err)
	}
	// Reaped by init once this process is gone; until then a zombie
	// only if it exits first, which Release leaves to the kernel.
	return cmd.Process.Release()
}
