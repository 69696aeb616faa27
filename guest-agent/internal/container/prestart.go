package container

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agentlog"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/initproc"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/reaper"
)

// prestartedInit is a container init started before its container: the
// agent re-executed in new PID, UTS and IPC namespaces, running, waiting
// for its stdio and Config.
type prestartedInit struct {
	pid  int
	sync *os.File // the agent's end of its sync socket
}

// Prestart starts the init of the VM's first container before the host
// asks for it, and waits until it runs. Under TCG, forking and starting
// the agent binary costs a container ~140 ms of its start when done during
// the create (measured in a VM resumed from a snapshot, whose translation
// cache is empty); started before the agent opens its channel, a VM
// snapshot holds that work done. The agent calls it once, in VMs to be
// saved as snapshots. Only the first container gains: one init is
// prestarted per VM, since each costs guest memory while it waits.
func (m *Manager) Prestart(ctx context.Context) error {
	syncSock, childSync, err := newSyncSocket()
	if err != nil {
		return fmt.Errorf("prestart container init: %w", err)
	}
	defer childSync.Close()
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		syncSock.Close()
		return fmt.Errorf("prestart container init: %w", err)
	}
	defer devnull.Close()
	attr := &syscall.ProcAttr{
		Dir:   "/",
		Env:   []string{initproc.EnvMarker + "=1"},
		Files: []uintptr{devnull.Fd(), devnull.Fd(), devnull.Fd(), childSync.Fd()},
		// Its session leads to the container's terminal, if it gets one.
		Sys: &syscall.SysProcAttr{Setsid: true, Cloneflags: initCloneflags},
	}
	z := &prestartedInit{sync: syncSock}
	pid, err := m.reaper.Start(func() (int, error) {
		return syscall.ForkExec(m.cfg.Exe, []string{"gondolin-agent", initproc.Arg, initproc.PrestartedArg}, attr)
	}, func(e reaper.Exit) {
		// Only while no container took it (Handover replaces this).
		agentlog.Warnf("prestarted container init (pid %d) exited with status %d before a container took it", e.Pid, e.Status)
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.prestarted == z {
			m.prestarted = nil
			z.sync.Close()
		}
	})
	if err != nil {
		syncSock.Close()
		return fmt.Errorf("prestart container init: %w", err)
	}
	z.pid = pid
	if err := z.waitReady(ctx); err != nil {
		z.discard()
		return fmt.Errorf("prestart container init: %w", err)
	}
	m.mu.Lock()
	m.prestarted = z
	m.mu.Unlock()
	return nil
}

// EnsurePrestarted prestarts the next container's init unless one waits
// already.
func (m *Manager) EnsurePrestarted(ctx context.Context) error {
	m.mu.Lock()
	waiting := m.prestarted != nil
	m.mu.Unlock()
	if waiting {
		return nil
	}
	return m.Prestart(ctx)
}

// prestartTimeout bounds the wait for a prestarted init to run, which holds
// the agent's channel shut: it takes ~0.1 s under TCG.
const prestartTimeout = 10 * time.Second

func (z *prestartedInit) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(prestartTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = z.sync.SetReadDeadline(deadline)
	defer z.sync.SetReadDeadline(time.Time{})
	var b [1]byte
	if _, err := z.sync.Read(b[:]); err != nil {
		return fmt.Errorf("wait for it to run: %w", err)
	}
	if b[0] != initproc.ReadyByte {
		return fmt.Errorf("it sent %q, not that it runs", b[0])
	}
	return nil
}

// discard kills an init no container took.
func (z *prestartedInit) discard() {
	_ = unix.Kill(z.pid, unix.SIGKILL)
	z.sync.Close()
}

// startPrestarted makes the prestarted init, if there is one and sp is a
// container's init, the process of p: it moves it into the container's
// cgroup and hands it its stdio. It returns a nil socket when there is
// none to take (or it has died), for the caller to fork one.
func (m *Manager) startPrestarted(c *Container, p *Process, sp spawnSpec, stdio []uintptr) (int, *os.File, error) {
	if len(sp.join) != 0 || sp.cgroupNS != nil {
		// An exec process, or the init of a container that joins another's
		// namespaces: it must fork in them, while the prestarted init
		// already has new ones.
		return 0, nil, nil
	}
	m.mu.Lock()
	z := m.prestarted
	m.prestarted = nil
	m.mu.Unlock()
	if z == nil {
		return 0, nil, nil
	}
	if !m.reaper.Handover(z.pid, p.onExit) {
		z.sync.Close() // it died before its exit was dispatched
		return 0, nil, nil
	}
	// In the cgroup before it does anything for the container, as if
	// born there (CLONE_INTO_CGROUP on the fork path).
	procs := filepath.Join(c.cgroup, "cgroup.procs")
	if err := os.WriteFile(procs, []byte(strconv.Itoa(z.pid)), 0); err != nil {
		z.discard()
		return 0, nil, fmt.Errorf("move prestarted init %d into %s: %w", z.pid, procs, err)
	}
	raw, err := z.sync.SyscallConn()
	if err != nil {
		z.discard()
		return 0, nil, err
	}
	var sendErr error
	err = raw.Write(func(fd uintptr) bool {
		sendErr = initproc.SendStdio(int(fd), [3]int{int(stdio[0]), int(stdio[1]), int(stdio[2])}, sp.terminal)
		return sendErr != unix.EAGAIN
	})
	if err == nil {
		err = sendErr
	}
	if err != nil {
		z.discard()
		return 0, nil, fmt.Errorf("hand stdio to prestarted init %d: %w", z.pid, err)
	}
	agentlog.Debugf("container %s: init is the prestarted pid %d", c.ID, z.pid)
	return z.pid, z.sync, nil
}
