package initproc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultPath is used to find the program when its environment has no PATH.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Main is the container init. It never returns: it execs the container's
// program or exits.
func Main() {
	// Namespace changes (cgroupns), no_new_privs and exec happen on this
	// thread; keep the goroutine on it.
	runtime.LockOSThread()
	// Until it execs the container's program (which makes it dumpable
	// again) this process is the agent binary with every capability, and
	// its threads other than this one keep the agent's mount namespace
	// and root: no process of the container may ptrace it or open its
	// /proc/<pid>/{root,cwd,exe,fd,mem} without CAP_SYS_PTRACE (which
	// the default set lacks; see docs/security.md). runc's init does the
	// same.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		os.Exit(1)
	}
	sync := os.NewFile(SyncFd, "sync")
	if len(os.Args) > 2 && os.Args[2] == PrestartedArg {
		// Started before its container: up to here it cost the fork,
		// the exec and the runtime's start, which is what starting it
		// early saves. Its stdio comes with the container.
		WarmCodec() // for the Config it will read
		if _, err := sync.Write([]byte{ReadyByte}); err != nil {
			os.Exit(1)
		}
		stdio, terminal, err := ReceiveStdio(SyncFd)
		if err != nil {
			fail(sync, err)
		}
		if err := takeStdio(stdio, terminal); err != nil {
			fail(sync, err)
		}
	}
	var cfg Config
	if err := ReadMessage(sync, &cfg); err != nil {
		fail(sync, fmt.Errorf("read config: %w", err))
	}
	path, err := prepare(&cfg)
	if err != nil {
		fail(sync, err)
	}
	if err := WriteMessage(sync, Result{}); err != nil {
		os.Exit(1)
	}
	var b [1]byte
	if n, err := sync.Read(b[:]); n != 1 || err != nil || b[0] != StartByte {
		os.Exit(1) // the agent went away or deleted us before start
	}
	closeOnExec()
	err = syscall.Exec(path, cfg.Args, cfg.Env)
	fail(sync, fmt.Errorf("exec %s: %w", path, err))
}

// closeOnExec marks every fd above stdio close-on-exec (the sync socket,
// which reports a failed exec, among them): the container's program gets
// its stdio and nothing of the agent's. The agent opens everything
// O_CLOEXEC and passes only what the child needs; this keeps it so
// whatever a later change passes or opens.
func closeOnExec() {
	if err := unix.CloseRange(SyncFd, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		unix.CloseOnExec(SyncFd) // a kernel before 5.11
	}
}

func fail(sync io.Writer, err error) {
	_ = WriteMessage(sync, Result{Error: err.Error()})
	os.Exit(127)
}

func prepare(cfg *Config) (string, error) {
	if len(cfg.Args) == 0 {
		return "", errors.New("process args must not be empty")
	}
	if cfg.Exec && !cfg.JoinMountNS {
		// It would run with the agent's root.
		return "", errors.New("an exec process must join the container's mount namespace")
	}
	// Read while /proc is still the guest's: the container may have none.
	lastCap := LastCap()
	if cfg.JoinCgroupNS {
		err := unix.Setns(CgroupNSFd, unix.CLONE_NEWCGROUP)
		unix.Close(CgroupNSFd)
		if err != nil {
			return "", fmt.Errorf("join the container's cgroup namespace: %w", err)
		}
	}
	if cfg.JoinMountNS {
		err := joinMountNS(MountNSFd)
		unix.Close(MountNSFd)
		if err != nil {
			return "", err
		}
	}
	if !cfg.Exec {
		if err := setupNamespaces(cfg); err != nil {
			return "", err
		}
	}
	for _, r := range cfg.Rlimits {
		res, err := RlimitResource(r.Type)
		if err != nil {
			return "", err
		}
		if err := unix.Setrlimit(res, &unix.Rlimit{Cur: r.Soft, Max: r.Hard}); err != nil {
			return "", fmt.Errorf("set %s to soft %d hard %d: %w", r.Type, r.Soft, r.Hard, err)
		}
	}
	// The root is the container's now (enterRoot, joinMountNS), and so
	// is the cwd: "/".
	cwd := cfg.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if err := unix.Chdir(cwd); err != nil {
		return "", fmt.Errorf("chdir to cwd (%q) set in config.json failed: %w", cwd, err)
	}
	if cfg.Umask != nil {
		unix.Umask(int(*cfg.Umask))
	}
	// Capabilities as runc applies them: the bounding set while we still
	// have CAP_SETPCAP, keep the permitted set across setuid, then set
	// effective/permitted/inheritable and ambient. All of it is per
	// thread: this thread (locked in Main) is the one that execs.
	caps := cfg.Caps.Limit(lastCap)
	if err := dropBounding(caps, lastCap); err != nil {
		return "", err
	}
	if cfg.UID != 0 {
		if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
			return "", fmt.Errorf("set keep-caps: %w", err)
		}
	}
	gids := make([]int, len(cfg.AdditionalGids))
	for i, g := range cfg.AdditionalGids {
		gids[i] = int(g)
	}
	// The syscall package versions change every thread of the process.
	if err := syscall.Setgroups(gids); err != nil {
		return "", fmt.Errorf("setgroups %v: %w", cfg.AdditionalGids, err)
	}
	if err := syscall.Setgid(int(cfg.GID)); err != nil {
		return "", fmt.Errorf("setgid %d: %w", cfg.GID, err)
	}
	if err := syscall.Setuid(int(cfg.UID)); err != nil {
		return "", fmt.Errorf("setuid %d: %w", cfg.UID, err)
	}
	if cfg.UID != 0 {
		if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 0, 0, 0, 0); err != nil {
			return "", fmt.Errorf("clear keep-caps: %w", err)
		}
	}
	if err := applyCaps(caps, lastCap); err != nil {
		return "", err
	}
	pathEnv := DefaultPath
	for _, e := range cfg.Env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathEnv = v
		}
	}
	os.Setenv("PATH", pathEnv)
	path, err := exec.LookPath(cfg.Args[0])
	if err != nil && !errors.Is(err, exec.ErrDot) {
		return "", err
	}
	if cfg.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return "", fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	return path, nil
}

// setupNamespaces does what only the container init does, in its new
// namespaces: cgroup namespace, hostname, a mount namespace of its own,
// namespace-bound mounts, sysctls, then masked and read-only paths (after
// the mounts, so that they apply to the container's own /proc), and last
// the move into the container root, which leaves the agent's mounts
// behind. The mounts the agent made below Rootfs before this process
// took its namespace (the root itself, binds, /dev, its files) come along
// as copies; everything made here exists in the container's namespace
// only and goes with it.
func setupNamespaces(cfg *Config) error {
	if cfg.CgroupNS {
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			return fmt.Errorf("unshare cgroup namespace: %w", err)
		}
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return fmt.Errorf("set hostname %q: %w", cfg.Hostname, err)
		}
	}
	if err := unshareMountNS(); err != nil {
		return err
	}
	for _, m := range cfg.Mounts {
		if err := os.MkdirAll(m.Target, 0o755); err != nil {
			return fmt.Errorf("create mount point %s: %w", m.Target, err)
		}
		if err := unix.Mount(m.Source, m.Target, m.Type, m.Flags, m.Data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.Type, m.Target, err)
		}
	}
	if err := writeSysctls(cfg.Sysctl); err != nil {
		return err
	}
	for _, p := range cfg.MaskedPaths {
		if err := maskPath(cfg.Rootfs, p); err != nil {
			return err
		}
	}
	for _, p := range cfg.ReadonlyPaths {
		if err := readonlyPath(cfg.Rootfs, p); err != nil {
			return err
		}
	}
	return enterRoot(cfg.Rootfs)
}
