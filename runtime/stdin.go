package runtime

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// stdinFIFO is the read end of a process's stdin FIFO, copied to the guest
// by copyTo. The client says "no more input" with CloseIO while its own
// writer may stay open (ctr calls CloseIO when its input ends and keeps
// the FIFO open), so EOF cannot wait for the FIFO's end: after CloseIO the
// copy takes what the FIFO holds at that moment, up to its 64 KiB, and
// then ends. Ending it at once dropped those bytes.
type stdinFIFO struct {
	f       *os.File
	closing atomic.Bool
}

// openStdinFIFO opens path for reading without waiting for a writer; the
// file is non-blocking, so reads park in Go's poller and honour deadlines.
func openStdinFIFO(path string) (*stdinFIFO, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	return &stdinFIFO{f: f}, nil
}

// Close closes the FIFO; a copy in progress ends.
func (s *stdinFIFO) Close() error { return s.f.Close() }

// closeInput is CloseIO: the copy ends once the FIFO is empty.
func (s *stdinFIFO) closeInput() {
	s.closing.Store(true)
	// Wake a read parked on an empty FIFO; a read that has data is not
	// affected by a deadline set after it returned.
	_ = s.f.SetReadDeadline(time.Now())
}

// copyTo copies the FIFO to dst until its EOF (every writer closed), an
// error, or closeInput and then the FIFO running empty.
func (s *stdinFIFO) copyTo(dst io.Writer) error {
	buf := make([]byte, 32*1024)
	for {
		n, err := s.f.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded) && s.closing.Load():
			return s.drainTo(dst, buf)
		default:
			return err
		}
	}
}

// drainTo copies what the FIFO holds now, without waiting for more.
func (s *stdinFIFO) drainTo(dst io.Writer, buf []byte) error {
	rc, err := s.f.SyscallConn()
	if err != nil {
		return err
	}
	if err := s.f.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), buf)
			return true // never wait: an empty FIFO ends the drain
		})
		if err != nil {
			return err
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
			continue
		}
		switch {
		case errors.Is(rerr, unix.EINTR):
			continue
		case rerr == nil, errors.Is(rerr, unix.EAGAIN):
			return nil // EOF, or nothing left
		default:
			return fmt.Errorf("read stdin: %w", rerr)
		}
	}
}
