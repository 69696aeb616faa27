package harness

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Ctr runs the ctr command line against the bench containerd.
type Ctr struct {
	Bin       string
	Address   string
	Namespace string
}

// Command returns ctr with the given arguments, bound to ctx (SIGKILL on
// cancel, pipes closed 5 s later at the latest).
func (c *Ctr) Command(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"--address", c.Address, "--namespace", c.Namespace}, args...)
	cmd := exec.CommandContext(ctx, c.Bin, full...)
	cmd.Env = append(os.Environ(), "CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1")
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Output runs ctr and returns its standard output; a failure carries the
// tail of its error output.
func (c *Ctr) Output(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := c.Command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), cmdError("ctr "+args[0], err, ctx, stderr.String())
	}
	return stdout.String(), nil
}

// Remove kills and deletes container id and its task, whatever state they
// are in; errors are ignored (there may be nothing to remove).
func (c *Ctr) Remove(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	_, _ = c.Output(ctx, 20*time.Second, "tasks", "kill", "--all", "--signal", "SIGKILL", id)
	// A plain delete once the task has exited; --force only as a last resort
	// (runsc under the runc shim refuses a forced delete of an exited sandbox).
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := c.Output(ctx, 30*time.Second, "tasks", "delete", id)
		if err == nil || strings.Contains(err.Error(), "not found") {
			break
		}
		if time.Now().After(deadline) {
			_, _ = c.Output(ctx, 30*time.Second, "tasks", "delete", "--force", id)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	_, _ = c.Output(ctx, 30*time.Second, "containers", "delete", id)
}

// cmdError describes a failed command: its error, a timeout if that was the
// cause, and the last lines of its error output.
func cmdError(what string, err error, ctx context.Context, stderr string) error {
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out (%w)", err)
	}
	if t := tail(stderr, 6, 600); t != "" {
		return fmt.Errorf("%s: %v: %s", what, err, t)
	}
	return fmt.Errorf("%s: %v", what, err)
}

// tail returns the last n non-empty lines of s joined by " / ", at most max bytes.
func tail(s string, n, max int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t := strings.Join(lines, " / ")
	if len(t) > max {
		t = "…" + t[len(t)-max:]
	}
	return t
}

// Line is one line of a container's standard output and when it arrived,
// counted from the start of the ctr command.
type Line struct {
	At   time.Duration
	Text string
}

// RunSpec is one `ctr run`.
type RunSpec struct {
	ID      string
	Runtime *Runtime
	Image   string
	Args    []string // the container's command
	// Extra ctr run flags (mounts, --net-host, annotations).
	Flags []string
	// Detach runs with -d --null-io and returns once the task started.
	Detach bool
	// Timeout bounds the whole command; Stall, if set, aborts when no output
	// arrived for that long.
	Timeout time.Duration
	Stall   time.Duration
	// Stdout, if set, is handed the container's standard output instead of the
	// line reader; t0 is when ctr was started. It must read until EOF.
	Stdout func(r io.Reader, t0 time.Time, progress func()) error
	// OnLine is called for every line of output as it arrives (line mode).
	OnLine func(Line)
	// Stdin, if set, is called with the container's standard input once ctr
	// runs; it must close it when done. Its ctx ends when the container's
	// output ends (ctr exited) or the run times out.
	Stdin func(ctx context.Context, w io.WriteCloser, progress func()) error
}

// RunResult is what a finished `ctr run` produced.
type RunResult struct {
	Start  time.Time
	Lines  []Line
	Exit   time.Duration // from start of ctr to its exit
	Stderr string
}

// Run runs a container through ctr (`ctr run --rm`, or `-d` when detached)
// and times it. On any failure the container is removed.
func (c *Ctr) Run(ctx context.Context, spec RunSpec) (*RunResult, error) {
	if spec.Timeout == 0 {
		spec.Timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	args := []string{"run"}
	if spec.Detach {
		args = append(args, "--detach", "--null-io")
	} else {
		args = append(args, "--rm")
	}
	args = append(args, spec.Runtime.RunFlags...)
	args = append(args, spec.Flags...)
	args = append(args, spec.Image, spec.ID)
	args = append(args, spec.Args...)
	cmd := c.Command(ctx, args...)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	var stdout io.ReadCloser
	var stdin io.WriteCloser
	var err error
	if !spec.Detach {
		if stdout, err = cmd.StdoutPipe(); err != nil {
			return nil, err
		}
	}
	if spec.Stdin != nil {
		if stdin, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
	}
	res := &RunResult{}
	var (
		mu       sync.Mutex
		lastSeen = time.Now()
	)
	progress := func() {
		mu.Lock()
		lastSeen = time.Now()
		mu.Unlock()
	}
	res.Start = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting ctr: %w", err)
	}
	var wg sync.WaitGroup
	var readErr, stdinErr error
	stdinCtx, stdinCancel := context.WithCancel(ctx)
	defer stdinCancel()
	if stdout != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer stdinCancel()
			if spec.Stdout != nil {
				readErr = spec.Stdout(stdout, res.Start, progress)
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
			br := bufio.NewReaderSize(stdout, 64<<10)
			for {
				text, err := br.ReadString('\n')
				if text != "" {
					l := Line{At: time.Since(res.Start), Text: strings.TrimRight(text, "\r\n")}
					progress()
					mu.Lock()
					res.Lines = append(res.Lines, l)
					mu.Unlock()
					if spec.OnLine != nil {
						spec.OnLine(l)
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
	if stdin != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stdinErr = spec.Stdin(stdinCtx, stdin, progress)
		}()
	}
	stalled := make(chan struct{})
	if spec.Stall > 0 {
		done := make(chan struct{})
		defer close(done)
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					mu.Lock()
					idle := time.Since(lastSeen)
					mu.Unlock()
					if idle > spec.Stall {
						close(stalled)
						cancel()
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	waitErr := cmd.Wait()
	res.Exit = time.Since(res.Start)
	res.Stderr = stderr.String()
	select {
	case <-stalled:
		waitErr = fmt.Errorf("no progress for %s, aborted (%v)", spec.Stall, waitErr)
	default:
	}
	err = nil
	switch {
	case waitErr != nil:
		err = cmdError("ctr run", waitErr, ctx, res.Stderr)
	case readErr != nil:
		err = fmt.Errorf("reading the container's output: %w (ctr stderr: %s)", readErr, tail(res.Stderr, 4, 400))
	case stdinErr != nil:
		err = fmt.Errorf("feeding the container's input: %w (ctr stderr: %s)", stdinErr, tail(res.Stderr, 4, 400))
	}
	if err != nil {
		c.Remove(spec.ID)
		return res, err
	}
	return res, nil
}

// Marker returns when the first line starting with "@@name" arrived.
func (r *RunResult) Marker(name string) (time.Duration, string, error) {
	for _, l := range r.Lines {
		if l.Text == "@@"+name || strings.HasPrefix(l.Text, "@@"+name+" ") {
			return l.At, strings.TrimSpace(strings.TrimPrefix(l.Text, "@@"+name)), nil
		}
	}
	return 0, "", fmt.Errorf("the container never printed @@%s (output: %s; ctr stderr: %s)", name, tail(r.text(), 4, 300), tail(r.Stderr, 4, 300))
}

func (r *RunResult) text() string {
	var b strings.Builder
	for _, l := range r.Lines {
		b.WriteString(l.Text)
		b.WriteByte('\n')
	}
	return b.String()
}

// lockedBuffer is a bytes.Buffer safe for the concurrent writes of exec.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
