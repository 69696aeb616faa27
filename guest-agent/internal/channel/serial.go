package channel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// SerialPort is the virtio-serial transport: the port named Name, found in
// /sys/class/virtio-ports, opened once per host session.
type SerialPort struct {
	Name string
	// SysDir is /sys/class/virtio-ports (overridable for tests).
	SysDir string
	// PollInterval is how often to look for the host while it is not
	// connected when the port cannot signal its arrival (SIGIO).
	PollInterval time.Duration
	// WakeInterval is how often to look for it anyway when it can: a
	// VM waiting for its host (a VM pool's) then sleeps instead of
	// polling, which under TCG cost ~15 % of a host core.
	WakeInterval time.Duration

	dev string
}

// NewSerialPort returns the transport for the port called name.
func NewSerialPort(name string) *SerialPort {
	return &SerialPort{Name: name, SysDir: "/sys/class/virtio-ports", PollInterval: 5 * time.Millisecond, WakeInterval: time.Second}
}

// FindPort returns the /dev path of the virtio-serial port called name.
func FindPort(sysDir, name string) (string, error) {
	names, err := filepath.Glob(filepath.Join(sysDir, "*", "name"))
	if err != nil {
		return "", err
	}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == name {
			return "/dev/" + filepath.Base(filepath.Dir(n)), nil
		}
	}
	return "", ErrNoPort{Name: name}
}

// Find waits up to timeout for the port to appear and remembers it.
func (p *SerialPort) Find(timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		dev, err := FindPort(p.SysDir, p.Name)
		if err == nil {
			if _, err = os.Stat(dev); err == nil {
				p.dev = dev
				return dev, nil
			}
		}
		if time.Now().After(deadline) {
			return "", err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Next opens the port and waits until the host is connected to it.
func (p *SerialPort) Next(ctx context.Context) (io.ReadWriteCloser, error) {
	if p.dev == "" {
		if _, err := p.Find(10 * time.Second); err != nil {
			return nil, err
		}
	}
	fd, err := unix.Open(p.dev, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p.dev, err)
	}
	// While the host end is closed, reads return EOF at once and poll
	// reports POLLHUP; wait for it to clear. The driver sends SIGIO to the
	// port's owner when the host connects (fasync): asked for before the
	// first look, so that no arrival is missed.
	wake := make(chan os.Signal, 1)
	signal.Notify(wake, unix.SIGIO)
	defer signal.Stop(wake)
	interval := p.PollInterval
	async := enableSIGIO(fd) == nil
	if async {
		if p.WakeInterval > 0 {
			interval = p.WakeInterval
		}
		defer disableSIGIO(fd)
	}
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLOUT}}
		_, err := unix.Poll(fds, 1000)
		if err != nil && !errors.Is(err, unix.EINTR) {
			unix.Close(fd)
			return nil, fmt.Errorf("poll %s: %w", p.dev, err)
		}
		if err == nil && fds[0].Revents&unix.POLLHUP == 0 && fds[0].Revents != 0 {
			break
		}
		select {
		case <-ctx.Done():
			unix.Close(fd)
			return nil, ctx.Err()
		case <-wake:
		case <-time.After(interval):
		}
	}
	// O_NONBLOCK makes the file pollable: reads and writes park in Go's
	// netpoller and Close interrupts them.
	return os.NewFile(uintptr(fd), p.dev), nil
}

// enableSIGIO has the kernel signal this process (SIGIO) when fd's state
// changes.
func enableSIGIO(fd int) error {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETOWN, unix.Getpid()); err != nil {
		return err
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags|unix.O_ASYNC)
	return err
}

// disableSIGIO undoes enableSIGIO: a session's data is read through Go's
// poller, not signalled.
func disableSIGIO(fd int) {
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err == nil {
		_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags&^unix.O_ASYNC)
	}
}
