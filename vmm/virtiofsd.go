package vmm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// DefaultVirtiofsd is where Debian's QEMU package (up to 7.2) installs its
// C virtiofsd, the last resort when no Rust one is found.
const DefaultVirtiofsd = "/usr/lib/qemu/virtiofsd"

// rustVirtiofsdPaths are where distributions install the Rust virtiofsd,
// which replaced QEMU's (QEMU 8.0 dropped the C file server). After them a
// virtiofsd on PATH (`make tools` puts one in .cache/tools/bin) is tried.
var rustVirtiofsdPaths = []string{"/usr/libexec/virtiofsd", "/usr/lib/virtiofsd"}

// FileServer is a virtiofsd process exporting one host directory.
type FileServer struct {
	// cmd is the process this one started; nil for an adopted file
	// server (AdoptFileServer), which pidfd watches and signals.
	cmd    *exec.Cmd
	pid    int
	pidfd  *os.File
	socket string
	stderr bytes.Buffer
	mu     sync.Mutex
	done   chan struct{}
}

// virtiofsdFlavour tells the two virtiofsd implementations apart: they take
// the same settings in different syntaxes.
type virtiofsdFlavour int

const (
	// flavourC is QEMU's C virtiofsd: `-o key=value` options.
	flavourC virtiofsdFlavour = iota
	// flavourRust is gitlab.com/virtio-fs/virtiofsd: long options.
	flavourRust
)

// detectFlavour asks binary for its version: the C one says "virtiofsd
// version 7.2.22 (...)", the Rust one "virtiofsd 1.13.2".
func detectFlavour(ctx context.Context, binary string) (virtiofsdFlavour, error) {
	out, err := exec.CommandContext(ctx, binary, "--version").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w: %s", binary, err, bytes.TrimSpace(out))
	}
	return parseFlavour(string(out))
}

func parseFlavour(version string) (virtiofsdFlavour, error) {
	first, _, _ := strings.Cut(strings.TrimSpace(version), "\n")
	fields := strings.Fields(first)
	switch {
	case len(fields) >= 3 && fields[0] == "virtiofsd" && fields[1] == "version":
		return flavourC, nil
	case len(fields) >= 2 && fields[0] == "virtiofsd":
		return flavourRust, nil
	}
	return 0, fmt.Errorf("not a virtiofsd: --version printed %q (expected QEMU's \"virtiofsd version 7.x\" or the Rust \"virtiofsd 1.x\")", first)
}

// fileServerArgs are virtiofsd's arguments to export dir on socket.
// cache=auto keeps metadata coherent with host-side changes. xattr carries
// file capabilities and SELinux labels of image files.
//
// virtiofsd is what a hostile guest talks to on the host, so it runs as
// confined as it can (docs/security.md, "virtiofsd"):
//   - sandbox=namespace: its own mount, PID and network namespaces,
//     pivot_root'ed into dir, so a compromised virtiofsd sees no host path
//     but the share, no host process and no network (chroot left it in
//     the host's namespaces, with the host's mount table and /proc);
//   - its seccomp allow-list (the Rust one's --seccomp=kill, said
//     explicitly; QEMU's C one always installs its own);
//   - capabilities cut to what serving files needs, less CAP_MKNOD (modcaps):
//     the guest cannot make device nodes in host directories (a bind's
//     source), which host users could open. FIFOs and sockets need no
//     capability and still work; the agent never makes device nodes in a
//     share (a container's /dev nodes go on a guest tmpfs or are bound
//     from the guest's /dev).
//
// openFiles caps the file descriptors virtiofsd may hold: it keeps one per
// inode the guest has looked up until the guest forgets it, and a hostile
// guest kernel never does. Both flavours spell the option the same way.
//
// With submounts, each file system mounted below dir is announced to the
// guest as a submount of its own (FUSE_ATTR_SUBMOUNT), so that files of
// different file systems never share an inode number in the guest.
func fileServerArgs(f virtiofsdFlavour, dir string, sh Share, openFiles int) []string {
	rlimit := fmt.Sprintf("--rlimit-nofile=%d", openFiles)
	if f == flavourRust {
		// No thread pool (the Rust default, 0 = serve requests on the
		// queue's own thread): one VM's requests arrive one queue at a
		// time anyway, and every idle thread costs memory.
		args := []string{
			"--socket-path=" + sh.Socket,
			"--shared-dir=" + dir,
			"--cache=auto",
			"--sandbox=namespace",
			"--seccomp=kill",
			"--modcaps=-mknod",
			"--xattr",
			"--log-level=error",
			rlimit,
		}
		if sh.Submounts {
			args = append(args, "--announce-submounts")
		}
		return args
	}
	args := []string{
		"--socket-path=" + sh.Socket,
		"-o", "source=" + dir,
		"-o", "cache=auto",
		"-o", "sandbox=namespace",
		"-o", "modcaps=-mknod",
		"-o", "xattr",
		"-o", "log_level=err",
		rlimit,
	}
	if sh.Submounts {
		args = append(args, "-o", "announce_submounts")
	}
	return args
}

// Virtiofsd is a virtiofsd binary and the syntax it takes.
type Virtiofsd struct {
	Path string
	// OpenFiles caps each file server's open file descriptors (limits.
	// file_server_open_files); 0 means DefaultFileServerOpenFiles.
	OpenFiles int
	// Detached starts file servers that outlive the process that
	// started them (no parent-death signal), for a VM pool.
	Detached bool
	flavour  virtiofsdFlavour
}

// DefaultFileServerOpenFiles is the Rust virtiofsd's own default, below
// most hosts' fs.nr_open.
const DefaultFileServerOpenFiles = 1 << 20

// LookupVirtiofsd resolves the runtime config's virtiofsd_path: that path,
// or when it is empty the Rust virtiofsd (rustVirtiofsdPaths, then PATH),
// else QEMU's C one. The Rust one is preferred: it is maintained, its
// seccomp filter is current, and only it can save its state with a VM. It
// asks the binary which virtiofsd it is, once for all the file servers of
// a VM.
func LookupVirtiofsd(ctx context.Context, path string) (*Virtiofsd, error) {
	if path == "" {
		candidates := append([]string{}, rustVirtiofsdPaths...)
		if p, err := exec.LookPath("virtiofsd"); err == nil {
			candidates = append(candidates, p)
		}
		if v := lookupRustVirtiofsd(ctx, candidates); v != nil {
			return v, nil
		}
		path = DefaultVirtiofsd
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("virtiofsd (%s) is not installed: install Debian's qemu-system-common package (make deps), or the Rust virtiofsd, or set virtiofsd_path in the runtime config: %w", path, err)
	}
	flavour, err := detectFlavour(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("virtiofsd_path %s: %w", path, err)
	}
	return &Virtiofsd{Path: path, flavour: flavour}, nil
}

// lookupRustVirtiofsd returns the first of candidates that is the Rust
// virtiofsd; nil if none is.
func lookupRustVirtiofsd(ctx context.Context, candidates []string) *Virtiofsd {
	for _, p := range candidates {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if f, err := detectFlavour(ctx, p); err == nil && f == flavourRust {
			return &Virtiofsd{Path: p, flavour: f}
		}
	}
	return nil
}

// CanSaveState tells whether this virtiofsd can hand its state over with
// its VM's, which saving a VM with virtio-fs needs: the Rust one can, QEMU's
// C one cannot.
func (v *Virtiofsd) CanSaveState() error {
	if v.flavour != flavourRust {
		return fmt.Errorf("%s is QEMU's C virtiofsd, which cannot save its state with its VM: use the Rust virtiofsd (virtiofsd_path)", v.Path)
	}
	return nil
}

// StartFileServer exports dir as share sh on sh's vhost-user socket. The
// socket is ready to be handed to the VMM when this returns.
func (v *Virtiofsd) StartFileServer(ctx context.Context, dir string, sh Share) (*FileServer, error) {
	fs := &FileServer{socket: sh.Socket, done: make(chan struct{})}
	fs.cmd = exec.Command(v.Path, fileServerArgs(v.flavour, dir, sh, v.openFiles())...)
	fs.cmd.Stderr = &lockedWriter{mu: &fs.mu, w: &fs.stderr}
	fs.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if v.Detached {
		fs.cmd.SysProcAttr.Pdeathsig = 0
	}
	// Its sandboxed child holds stderr too: once virtiofsd has exited,
	// do not wait on the pipe for long.
	fs.cmd.WaitDelay = time.Second
	if err := fs.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start virtiofsd for %s: %w", dir, err)
	}
	fs.pid = fs.cmd.Process.Pid
	go func() {
		_ = fs.cmd.Wait()
		close(fs.done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sh.Socket); err == nil {
			return fs, nil
		}
		select {
		case <-fs.done:
			return nil, fmt.Errorf("virtiofsd exited before serving %s: %s", dir, fs.Stderr())
		case <-ctx.Done():
			fs.Stop()
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			fs.Stop()
			return nil, fmt.Errorf("virtiofsd did not create %s within 10s: %s", sh.Socket, fs.Stderr())
		}
	}
}

// Pid is virtiofsd's host process ID.
func (fs *FileServer) Pid() int { return fs.pid }

// AdoptFileServer takes over a file server another process started
// (Virtiofsd.Detached) and handed over with a pidfd of it (which the
// FileServer then owns), serving on socket.
func AdoptFileServer(pid int, pidfd *os.File, socket string) *FileServer {
	fs := &FileServer{pid: pid, pidfd: pidfd, socket: socket, done: make(chan struct{})}
	WaitPidfd(pidfd, fs.done)
	return fs
}

// signal sends sig to the file server process.
func (fs *FileServer) signal(sig syscall.Signal) error {
	if fs.cmd == nil {
		return PidfdSignal(fs.pidfd, sig)
	}
	return fs.cmd.Process.Signal(sig)
}

// Pids are virtiofsd's host processes: the one started and, sandboxed in
// its own namespaces (sandbox=namespace), the child that serves from its
// new PID namespace. The Rust virtiofsd has forked that child by the time
// its socket exists (StartFileServer's return); QEMU's C one forks it when
// the VMM connects, so it inherits where its parent was put by then. Placing
// a file server (a cgroup) means placing each of these.
func (fs *FileServer) Pids() []int {
	pids := []int{fs.Pid()}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", fs.Pid()))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// Socket is the vhost-user socket to give the VMM.
func (fs *FileServer) Socket() string { return fs.socket }

// Done is closed when the virtiofsd process has exited.
func (fs *FileServer) Done() <-chan struct{} { return fs.done }

// Stderr is what virtiofsd printed.
func (fs *FileServer) Stderr() string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return string(bytes.TrimSpace(fs.stderr.Bytes()))
}

// Stop ends virtiofsd; call it once the VMM is gone (nothing is left to
// serve). virtiofsd notices the VMM's disconnect by itself only sometimes
// promptly (up to 0.5 s later here), so it is told to exit (SIGTERM) at
// once, and killed if it has not within 500 ms.
func (fs *FileServer) Stop() {
	select {
	case <-fs.done:
	default:
		_ = fs.signal(syscall.SIGTERM)
		select {
		case <-fs.done:
		case <-time.After(500 * time.Millisecond):
			// The process group: virtiofsd and its sandboxed child
			// (which its parent's death kills too, by its own
			// parent-death signal).
			if err := syscall.Kill(-fs.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				log.L.WithError(err).Warn("kill virtiofsd")
			}
			<-fs.done
		}
	}
	_ = os.Remove(fs.socket)
	if fs.pidfd != nil {
		fs.pidfd.Close()
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w.Len() > 64<<10 {
		return len(p), nil
	}
	return l.w.Write(p)
}

// openFiles is the limit virtiofsd is asked for: the configured one, but
// never above the shim's own hard limit, which virtiofsd could only pass
// with CAP_SYS_RESOURCE (not every host's root has it) and would then
// refuse to start.
func (v *Virtiofsd) openFiles() int {
	n := v.OpenFiles
	if n <= 0 {
		n = DefaultFileServerOpenFiles
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Max != unix.RLIM_INFINITY && uint64(n) > rl.Max {
		n = int(rl.Max)
	}
	return n
}
