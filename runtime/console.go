package runtime

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// consoleLog writes what the guest prints on its serial console to the
// bundle's console.log, at most limit bytes of it: QEMU sends the console
// to a unix socket the shim listens on (instead of writing a file itself,
// which a guest printing in a loop would grow until /run is full).
//
// The log keeps the head: the first limit bytes (less a closing line that
// says the rest was discarded). Boot errors, the first thing worth
// reading, are there, and a guest cannot push what it printed early out of
// the log by printing more. Past the limit the shim keeps reading and
// discarding, so the guest's console never stalls on the host.
type consoleLog struct {
	id     string
	path   string
	socket string
	limit  int64
	l      *net.UnixListener
	f      *os.File
	done   chan struct{}

	mu sync.Mutex
	// fd is the console connection being read (blocking); -1 for none.
	fd      int
	closed  bool
	written int64
	dropped int64
}

// consoleBatchDelay is how long the console copy waits after a short read.
// QEMU writes the console a byte at a time and each byte queued on the
// socket takes an skb, so the socket fills after a few hundred bytes and
// the guest's UART waits: 10 ms gives the console about 25 KB/s (twice a
// 115200-baud line) for about 4% of a host core in the shim under a
// flood (measured under TCG; without the delay, through Go's poller, the
// guest printed at 170 KB/s and the shim spent 12-16% of a core).
const consoleBatchDelay = 10 * time.Millisecond

// consoleCappedLine ends a console log that reached its limit.
const consoleCappedLine = "\n[gondolin: the console log reached limits.console_log_bytes (%d bytes); the rest of the guest's console output was discarded]\n"

// openConsoleLog creates (truncates) path, the console log, and listens on
// socket for the VMM's console. first, if not nil, is a console connection
// the VMM already made (a VM pool's VM, handed over), read first.
func openConsoleLog(id, path, socket string, limit int64, first net.Conn) (*consoleLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o640)
	if err != nil {
		return nil, fmt.Errorf("create console log: %w", err)
	}
	_ = os.Remove(socket)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("listen for the VM console: %w", err)
	}
	c := &consoleLog{id: id, path: path, socket: socket, limit: limit, l: l, f: f, fd: -1, done: make(chan struct{})}
	go c.serve(first)
	return c, nil
}

// serve takes the VMM's console connections one at a time (a VM that is
// booted again after a failed resume connects again) until Close.
func (c *consoleLog) serve(first net.Conn) {
	defer close(c.done)
	buf := make([]byte, 32<<10)
	conn := first
	for {
		if conn == nil {
			var err error
			if conn, err = c.l.Accept(); err != nil {
				return
			}
		}
		// QEMU sends the serial port's bytes one write at a time. Read
		// from a blocking descriptor, outside Go's poller (which would
		// wake for each byte), and after a short read let bytes gather:
		// a guest printing in a loop then costs the shim a few hundred
		// reads a second, and its console waits on the socket.
		fd, err := blockingFd(conn)
		conn = nil
		if err != nil {
			log.L.WithError(err).WithField("container", c.id).Warn("console connection")
			continue
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			unix.Close(fd)
			return
		}
		c.fd = fd
		c.mu.Unlock()
		for {
			n, err := unix.Read(fd, buf)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if n > 0 {
				c.write(buf[:n])
			}
			if err != nil || n <= 0 {
				break
			}
			if n < len(buf)/2 {
				time.Sleep(consoleBatchDelay)
			}
		}
		c.mu.Lock()
		c.fd = -1
		c.mu.Unlock()
		unix.Close(fd)
	}
}

// blockingFd turns conn into a blocking descriptor that Go's poller does
// not watch (closing conn takes its own descriptor out of the poller).
func blockingFd(conn net.Conn) (int, error) {
	defer conn.Close()
	raw, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(s uintptr) {
		fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, dupErr
	}
	// The duplicate shares the file's flags: clear O_NONBLOCK.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// write appends p, or as much of it as the limit leaves room for.
func (c *consoleLog) write(p []byte) {
	if len(p) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	capped := fmt.Sprintf(consoleCappedLine, c.limit)
	room := max(c.limit-int64(len(capped))-c.written, 0)
	if c.dropped > 0 {
		room = 0
	}
	n := min(int64(len(p)), room)
	if n > 0 {
		w, err := c.f.Write(p[:n])
		c.written += int64(w)
		if err != nil {
			// A full disk: stop writing, as if the limit were reached.
			c.written = c.limit
		}
	}
	if rest := int64(len(p)) - n; rest > 0 {
		if c.dropped == 0 {
			line := capped[:min(int64(len(capped)), max(c.limit-c.written, 0))]
			w, _ := c.f.WriteString(line)
			c.written += int64(w)
		}
		c.dropped += rest
	}
}

// Close stops taking console output, waits for the copy to end and closes
// the log. It says once how much output was discarded.
func (c *consoleLog) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	if c.fd >= 0 {
		// Ends the blocking read (closing would not).
		_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
	c.mu.Unlock()
	c.l.Close()
	<-c.done
	if err := c.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		log.L.WithError(err).WithField("container", c.id).Warn("close the console log")
	}
	_ = os.Remove(c.socket)
	if c.dropped > 0 {
		log.L.WithFields(log.Fields{"container": c.id, "limit": c.limit, "discarded_bytes": c.dropped}).
			Warn("the guest's console output passed limits.console_log_bytes; the rest was discarded")
	}
}
