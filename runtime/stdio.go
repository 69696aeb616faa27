package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/fifo"
	"github.com/containerd/log"
)

// Stdio names where a process's standard streams go, as containerd gives
// them: FIFO paths, or for stdout a file:// or binary:// URI (then stderr
// goes the same way).
type Stdio struct {
	Stdin    string
	Stdout   string
	Stderr   string
	Terminal bool
}

// hostIO is the host end of a process's stdio.
type hostIO struct {
	stdin          *stdinFIFO
	stdout, stderr io.WriteCloser
	// closers run after the process's output has been copied.
	closers []func() error
}

// openHostIO opens what s names. A FIFO's reader is containerd, which opened
// it before calling create.
func openHostIO(ctx context.Context, id, namespace string, s Stdio) (_ *hostIO, retErr error) {
	h := &hostIO{}
	defer func() {
		if retErr != nil {
			h.Close()
		}
	}()
	if s.Stdin != "" {
		f, err := openStdinFIFO(s.Stdin)
		if err != nil {
			return nil, fmt.Errorf("open stdin %s: %w", s.Stdin, err)
		}
		h.stdin = f
		h.closers = append(h.closers, f.Close)
	}
	if s.Stdout == "" && s.Stderr == "" {
		return h, nil
	}
	u, err := url.Parse(s.Stdout)
	if err != nil {
		return nil, fmt.Errorf("stdout %q is neither a path nor a URI: %w", s.Stdout, err)
	}
	switch u.Scheme {
	case "", "fifo":
		stderr := s.Stderr
		if s.Terminal {
			// A terminal has no stderr: its output is stdout's. A client
			// may still name a stderr FIFO it never creates (containerd's
			// cio with a terminal, as nerdctl -t uses it); runc's shim
			// ignores it too.
			stderr = ""
		}
		for _, p := range []struct {
			path string
			dst  *io.WriteCloser
		}{{s.Stdout, &h.stdout}, {stderr, &h.stderr}} {
			if p.path == "" {
				continue
			}
			f, err := fifo.OpenFifo(ctx, p.path, syscall.O_WRONLY, 0)
			if err != nil {
				return nil, fmt.Errorf("open %s: %w", p.path, err)
			}
			*p.dst = f
			h.closers = append(h.closers, f.Close)
		}
	case "file":
		if err := os.MkdirAll(filepath.Dir(u.Path), 0o755); err != nil {
			return nil, fmt.Errorf("log file directory: %w", err)
		}
		f, err := os.OpenFile(u.Path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open log file: %w", err)
		}
		w := &syncWriter{w: f}
		h.stdout, h.stderr = nopCloser{w}, nopCloser{w}
		h.closers = append(h.closers, f.Close)
	case "binary":
		if err := h.startLogBinary(ctx, id, namespace, u); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("stdout URI scheme %q is not supported: use a FIFO path, file:// or binary://", u.Scheme)
	}
	return h, nil
}

// startLogBinary runs a shim logging binary (containerd's runtime/v2/logging
// protocol): it reads stdout on fd 3 and stderr on fd 4 and closes fd 5
// when it is ready.
func (h *hostIO) startLogBinary(ctx context.Context, id, namespace string, u *url.URL) error {
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		errR.Close()
		errW.Close()
		return err
	}
	var args []string
	for k, vs := range u.Query() {
		args = append(args, k)
		if len(vs) > 0 {
			args = append(args, vs[0])
		}
	}
	cmd := exec.Command(u.Path, args...)
	cmd.Env = append(os.Environ(), "CONTAINER_ID="+id, "CONTAINER_NAMESPACE="+namespace)
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	startErr := cmd.Start()
	outR.Close()
	errR.Close()
	readyW.Close()
	if startErr != nil {
		outW.Close()
		errW.Close()
		readyR.Close()
		return fmt.Errorf("start logging binary %s: %w", u.Path, startErr)
	}
	b := make([]byte, 1)
	_, err = readyR.Read(b)
	readyR.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		_ = cmd.Process.Kill()
		outW.Close()
		errW.Close()
		return fmt.Errorf("logging binary %s did not become ready: %w", u.Path, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	h.stdout, h.stderr = outW, errW
	h.closers = append(h.closers, func() error {
		// Closing our pipe ends lets the logger drain and exit; give it
		// time, then stop it.
		outW.Close()
		errW.Close()
		select {
		case err := <-waited:
			return err
		case <-time.After(12 * time.Second):
			log.G(ctx).Warnf("logging binary %s did not exit; killing it", u.Path)
			_ = cmd.Process.Kill()
			return <-waited
		}
	})
	return nil
}

// Close releases everything; safe to call more than once.
func (h *hostIO) Close() {
	for i := len(h.closers) - 1; i >= 0; i-- {
		if err := h.closers[i](); err != nil {
			log.L.WithError(err).Debug("close stdio")
		}
	}
	h.closers = nil
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
