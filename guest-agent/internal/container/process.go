package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agentlog"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/channel"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/initproc"
)

// stdioStreams are the host streams of one process; nil when not asked for.
type stdioStreams struct {
	stdin, stdout, stderr net.Conn
}

func (s *stdioStreams) close() {
	for _, c := range []net.Conn{s.stdin, s.stdout, s.stderr} {
		if c != nil {
			c.Close()
		}
	}
}

// takeStdio waits (bounded by StdioTimeout) for the streams stdio names.
func (m *Manager) takeStdio(ctx context.Context, cid, eid string, stdio *api.Stdio) (*stdioStreams, error) {
	s := &stdioStreams{}
	if stdio == nil {
		return s, nil
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.StdioTimeout)
	defer cancel()
	for _, want := range []struct {
		on   bool
		kind api.StreamHeader_Kind
		dst  *net.Conn
	}{
		{stdio.GetStdin(), api.StreamHeader_STDIN, &s.stdin},
		{stdio.GetStdout(), api.StreamHeader_STDOUT, &s.stdout},
		{stdio.GetStderr(), api.StreamHeader_STDERR, &s.stderr},
	} {
		if !want.on {
			continue
		}
		k := channel.Key{ContainerID: cid, ExecID: eid, Kind: want.kind}
		c, err := m.streams.Take(ctx, k)
		if err != nil {
			s.close()
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, fmt.Errorf("timed out after %s waiting for the host to open the %s (open stdio streams before CreateContainer): %w", m.cfg.StdioTimeout, k, context.DeadlineExceeded)
			}
			return nil, err
		}
		*want.dst = c
	}
	return s, nil
}

// spawnSpec is what spawn starts.
type spawnSpec struct {
	cfg      initproc.Config
	terminal bool
	ptmx     string // the multiplexer to allocate the terminal from
	stdio    *stdioStreams
	// join holds the namespaces of a container init that the process
	// starts in: all of them for an exec process; for an init, those of
	// the container it joins (join_container_id), and it gets new ones of
	// the rest of initCloneflags. Such an init is never a prestarted one.
	join []nsFile
	// cgroupNS is the init's cgroup namespace, which an exec process
	// joins itself (passed as initproc.CgroupNSFd).
	cgroupNS *os.File
	// mountNS is the init's mount namespace, whose root is the
	// container's; an exec process joins it itself (passed as
	// initproc.MountNSFd, after cgroupNS).
	mountNS *os.File
}

// spawn starts the container process for p (the init, or an exec process
// in the init's namespaces), hands it its config and waits for it to be
// ready (or fail). On success p is registered in c and owns the streams;
// on failure the streams are closed too (p is registered if it was
// forked).
func (m *Manager) spawn(c *Container, p *Process, sp spawnSpec) (err error) {
	stdio := sp.stdio
	// Files the child gets; closed in the agent once it has forked.
	var childFiles []*os.File
	defer func() {
		for _, f := range childFiles {
			f.Close()
		}
	}()
	var parentFiles []*os.File // closed on failure only
	defer func() {
		if err != nil {
			for _, f := range parentFiles {
				f.Close()
			}
			stdio.close()
		}
	}()
	devnull, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	childFiles = append(childFiles, devnull)
	fds := []uintptr{devnull.Fd(), devnull.Fd(), devnull.Fd()}
	var stdinW, stdoutR, stderrR *os.File
	var tty *pty
	if sp.terminal {
		if tty, err = openPty(sp.ptmx, sp.cfg.UID); err != nil {
			return fmt.Errorf("allocate a terminal from %s: %w", sp.ptmx, err)
		}
		childFiles = append(childFiles, tty.slave)
		parentFiles = append(parentFiles, tty.master, tty.reader)
		fds = []uintptr{tty.slave.Fd(), tty.slave.Fd(), tty.slave.Fd()}
		// A terminal has no stderr of its own: a stream the host opened
		// for it anyway ends at once.
		if stdio.stderr != nil {
			stdio.stderr.Close()
			stdio.stderr = nil
		}
	} else {
		pipe := func(childRead bool, fdIndex int) (*os.File, error) {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			child, parent := w, r
			if childRead {
				child, parent = r, w
			} else {
				setPipeSize(r, outputPipeSize)
			}
			childFiles = append(childFiles, child)
			parentFiles = append(parentFiles, parent)
			fds[fdIndex] = child.Fd() // Fd() makes the child's end blocking again
			return parent, nil
		}
		if stdio.stdin != nil {
			if stdinW, err = pipe(true, 0); err != nil {
				return err
			}
		}
		if stdio.stdout != nil {
			if stdoutR, err = pipe(false, 1); err != nil {
				return err
			}
		}
		if stdio.stderr != nil {
			if stderrR, err = pipe(false, 2); err != nil {
				return err
			}
		}
	}

	// Count the copiers before the process can exit (onExit waits for them).
	copiers := 0
	for _, f := range []*os.File{stdoutR, stderrR} {
		if f != nil {
			copiers++
		}
	}
	if tty != nil {
		copiers = 1
	}
	if sp.cgroupNS != nil {
		sp.cfg.JoinCgroupNS = true
	}
	if sp.mountNS != nil {
		if sp.cgroupNS == nil {
			return errors.New("an exec process needs the init's cgroup namespace with its mount namespace")
		}
		sp.cfg.JoinMountNS = true
	}
	p.io.Add(copiers)
	pid, syncSock, err := m.startPrestarted(c, p, sp, fds)
	p.prestarted = syncSock != nil
	if err == nil && syncSock == nil {
		pid, syncSock, err = m.forkInit(c, p, sp, fds)
	}
	if err != nil {
		p.io.Add(-copiers)
		return fmt.Errorf("start container process: %w", err)
	}
	p.sync = syncSock
	p.Pid = pid
	c.procs[p.ExecID] = p
	for _, f := range childFiles {
		f.Close()
	}
	childFiles = nil

	// From here the copiers own the pipes and streams: they end when the
	// process (and whatever holds its pipes) is gone.
	parentFiles = []*os.File{p.sync}
	if tty != nil {
		p.mu.Lock()
		p.console = tty.master
		p.mu.Unlock()
		var out io.WriteCloser = discard{}
		if stdio.stdout != nil {
			out = stdio.stdout
		}
		go m.copyOut(p, out, tty.reader)
		if stdio.stdin != nil {
			go copyInTerminal(p, tty.master, stdio.stdin)
		}
	}
	if stdoutR != nil {
		go m.copyOut(p, stdio.stdout, stdoutR)
	}
	if stderrR != nil {
		go m.copyOut(p, stdio.stderr, stderrR)
	}
	if stdinW != nil {
		go copyIn(p, stdinW, stdio.stdin)
	}
	stdio = &stdioStreams{}

	_ = p.sync.SetDeadline(time.Now().Add(60 * time.Second))
	if err := initproc.WriteMessage(p.sync, sp.cfg); err != nil {
		return fmt.Errorf("send config to container process: %w", err)
	}
	var res initproc.Result
	if err := initproc.ReadMessage(p.sync, &res); err != nil {
		return fmt.Errorf("container process exited before it was ready: %w", err)
	}
	if res.Error != "" {
		return startFailed(res.Error)
	}
	_ = p.sync.SetDeadline(time.Time{})
	return nil
}

// newSyncSocket makes the socket between the agent and a container
// process: the agent's end is non-blocking (its reads and writes can time
// out), the child's, passed as initproc.SyncFd, is blocking.
func newSyncSocket() (agentEnd, childEnd *os.File, err error) {
	spair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	if err := unix.SetNonblock(spair[0], true); err != nil {
		unix.Close(spair[0])
		unix.Close(spair[1])
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return os.NewFile(uintptr(spair[0]), "sync"), os.NewFile(uintptr(spair[1]), "sync-child"), nil
}

// initCloneflags are the namespaces a container init gets new unless it
// joins another container's (sp.join). Its mount and cgroup namespaces it
// makes itself (initproc.setupNamespaces).
const initCloneflags = unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC

// forkInit starts the container process for p by re-executing the agent
// with stdio as its fds 0-2, born into the container's cgroup and in the
// namespaces of sp.join (every one for an exec, those a pod's container
// joins for an init). It returns the agent's end of the sync socket.
func (m *Manager) forkInit(c *Container, p *Process, sp spawnSpec, stdio []uintptr) (pid int, syncSock *os.File, err error) {
	syncSock, childSync, err := newSyncSocket()
	if err != nil {
		return 0, nil, err
	}
	defer childSync.Close()
	defer func() {
		if err != nil {
			syncSock.Close()
		}
	}()
	fds := append(append([]uintptr{}, stdio...), childSync.Fd())
	if sp.cgroupNS != nil {
		fds = append(fds, sp.cgroupNS.Fd()) // initproc.CgroupNSFd
	}
	if sp.mountNS != nil {
		fds = append(fds, sp.mountNS.Fd()) // initproc.MountNSFd
	}
	cg, err := os.Open(c.cgroup)
	if err != nil {
		return 0, nil, fmt.Errorf("open cgroup: %w", err)
	}
	defer cg.Close()

	sys := &syscall.SysProcAttr{
		Setsid:      true,
		UseCgroupFD: true,
		CgroupFD:    int(cg.Fd()),
	}
	if !sp.cfg.Exec {
		sys.Cloneflags = initCloneflags
		for _, n := range sp.join {
			sys.Cloneflags &^= uintptr(n.flag)
		}
	}
	if sp.terminal {
		// The new session's controlling terminal, so that its process
		// group is the foreground one (^C is SIGINT for it).
		sys.Setctty = true
		sys.Ctty = 0
	}
	attr := &syscall.ProcAttr{
		Dir:   "/",
		Env:   []string{initproc.EnvMarker + "=1"},
		Files: fds,
		Sys:   sys,
	}
	pid, err = runInNamespaces(sp.join, func() (int, error) {
		return m.reaper.Start(func() (int, error) {
			return syscall.ForkExec(m.cfg.Exe, []string{"gondolin-agent", initproc.Arg}, attr)
		}, p.onExit)
	})
	if err != nil {
		return 0, nil, err
	}
	return pid, syncSock, nil
}

// discard swallows a terminal's output nobody asked for, so that the
// process never blocks on a full terminal.
type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) Close() error                { return nil }

// release sends the start byte and waits for the exec: the socket reaches
// EOF when it succeeded (close-on-exec) and carries an error otherwise.
func release(p *Process) error {
	defer p.sync.Close()
	_ = p.sync.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := p.sync.Write([]byte{initproc.StartByte}); err != nil {
		return fmt.Errorf("release container init: %w", err)
	}
	var res initproc.Result
	err := initproc.ReadMessage(p.sync, &res)
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return fmt.Errorf("wait for exec of container process: %w", err)
	case res.Error != "":
		return startFailed(res.Error)
	}
	return nil
}

// copyOut copies a process's output pipe to its host stream, then
// half-closes the stream so the host sees EOF after the last byte. After
// the process exited, it keeps copying only while data keeps coming
// (DrainGrace of quiet ends it, MaxDrain caps it): a background child
// holding the pipe must not hold WaitProcess forever.
func (m *Manager) copyOut(p *Process, dst io.WriteCloser, src *os.File) {
	defer p.io.Done()
	defer dst.Close()
	defer src.Close()
	stop := make(chan struct{})
	defer close(stop)
	drainDeadline := func() time.Time {
		d := time.Now().Add(m.cfg.DrainGrace)
		if limit := p.exitInfo().At.Add(m.cfg.MaxDrain); d.After(limit) {
			d = limit
		}
		return d
	}
	go func() {
		select {
		case <-p.exited:
			_ = src.SetReadDeadline(drainDeadline())
		case <-stop:
		}
	}()
	// One read is one yamux frame is one virtio-serial buffer. The buffer
	// starts small and grows to the largest frame once a read fills it:
	// most processes print little, and every stream holds its buffer.
	buf := make([]byte, smallOutputBuffer)
	broken := false
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !broken {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					// The host went away; keep draining so the process
					// does not block on a full pipe.
					agentlog.Debugf("container %s: output stream: %v", p.ContainerID, werr)
					broken = true
				}
			}
			if p.hasExited() {
				_ = src.SetReadDeadline(drainDeadline())
			}
			if n == len(buf) && len(buf) < channel.MaxFrameBody {
				buf = make([]byte, channel.MaxFrameBody)
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				agentlog.Warnf("container %s: output pipe still open after process %d exited; closing its stream", p.ContainerID, p.Pid)
			}
			return
		}
	}
}

// smallOutputBuffer is an output stream's first read buffer (see copyOut).
const smallOutputBuffer = 32 * 1024

// outputPipeSize is the size asked for the pipes of a process's stdout and
// stderr: the 64 KiB default caps every read, and so every frame, at 64 KiB
// (channel.MaxWrite). The pages are the guest's, taken only while the
// process writes faster than its stream carries.
const outputPipeSize = channel.MaxWrite

// copyIn copies the host's stdin stream to the process; the stream's EOF
// closes the process's stdin. It stops when the process exited.
func copyIn(p *Process, dst *os.File, src net.Conn) {
	stop := make(chan struct{})
	go func() {
		select {
		case <-p.exited:
			_ = src.SetReadDeadline(time.Now())
		case <-stop:
		}
	}()
	_, _ = io.Copy(dst, src)
	close(stop)
	dst.Close()
	src.Close()
}

// copyInTerminal copies the host's stdin stream to a terminal. The
// stream's EOF only means the user detached: the terminal stays open
// (until the process is done). It stops when the process exited.
func copyInTerminal(p *Process, dst *os.File, src net.Conn) {
	stop := make(chan struct{})
	go func() {
		select {
		case <-p.exited:
			_ = src.SetReadDeadline(time.Now())
			_ = dst.SetWriteDeadline(time.Now())
		case <-stop:
		}
	}()
	_, _ = io.Copy(dst, src)
	close(stop)
	src.Close()
}

// startFailed is the error of a process the guest could not start (a missing
// binary, a bad working directory). Its text is exactly api.ProcessStartFailed
// and the reason: the host shows it to users as runc would.
func startFailed(reason string) error {
	return errdefs.ErrFailedPrecondition.WithMessage(api.ProcessStartFailed + ": " + reason)
}

// setPipeSize asks for a pipe of size bytes (F_SETPIPE_SZ) without making
// f blocking (Fd would). A pipe that keeps its size (a lower
// fs.pipe-max-size) only carries smaller frames, so a refusal is logged
// and otherwise ignored.
func setPipeSize(f *os.File, size int) {
	raw, err := f.SyscallConn()
	if err == nil {
		cerr := raw.Control(func(fd uintptr) {
			_, err = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, size)
		})
		if cerr != nil {
			err = cerr
		}
	}
	if err != nil {
		agentlog.Debugf("pipe size %d: %v", size, err)
	}
}
