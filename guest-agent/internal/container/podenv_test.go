package container

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/channel"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/initproc"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/reaper"
)

// The tests below run real containers: the manager re-executes this test
// binary as their init (Config.Exe is /proc/self/exe), in real namespaces
// and cgroups, with busybox as the containers' program. A directory of the
// test stands in for the virtio-fs share (Manager.mountShare binds it).

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == initproc.Arg && os.Getenv(initproc.EnvMarker) != "" {
		initproc.Main()
		return
	}
	os.Exit(m.Run())
}

// podTag is the tag of the test's one share, a pod's.
const podTag = "pod"

type noStreams struct{}

func (noStreams) Take(ctx context.Context, k channel.Key) (net.Conn, error) {
	return nil, fmt.Errorf("the test opened no %s", k)
}
func (noStreams) DropContainer(string) {}

type podEnv struct {
	t      *testing.T
	m      *Manager
	shares string // host directories standing for the virtio-fs shares, by tag
	share  string // the pod share's directory
	// busybox is copied into each container root.
	busybox string
}

// cgroup2Mount returns where the cgroup v2 hierarchy is mounted.
func cgroup2Mount() (string, error) {
	entries, err := readMountinfo()
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.FSType == "cgroup2" {
			return e.Target, nil
		}
	}
	return "", errors.New("no cgroup2 mount")
}

func newPodEnv(t *testing.T) *podEnv {
	t.Helper()
	busybox, err := findBusybox()
	if err != nil {
		t.Skip(err)
	}
	base := mountRoot(t) // skips unless root
	cg2, err := cgroup2Mount()
	if err != nil {
		t.Skip(err)
	}
	cgRoot := filepath.Join(cg2, fmt.Sprintf("gondolin-agent-test-%d", os.Getpid()))
	if err := os.Mkdir(cgRoot, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		t.Skipf("cannot make a cgroup: %v", err)
	}
	t.Cleanup(func() { _ = removeCgroup(cgRoot) })

	cfg := DefaultConfig()
	cfg.StateDir = filepath.Join(base, "containers")
	cfg.SharesDir = filepath.Join(base, "shares")
	cfg.FilesDir = filepath.Join(base, "files")
	cfg.PodShmDir = filepath.Join(base, "pod", "shm")
	cfg.CgroupRoot = cgRoot
	cfg.DrainGrace = 50 * time.Millisecond
	cfg.MaxDrain = 500 * time.Millisecond
	r := reaper.New()
	stop := make(chan struct{})
	go r.Run(stop)
	t.Cleanup(func() { close(stop) })

	e := &podEnv{t: t, m: NewManager(cfg, r, noStreams{}), shares: filepath.Join(base, "host-shares")}
	e.share = filepath.Join(e.shares, podTag)
	if err := os.MkdirAll(e.share, 0o755); err != nil {
		t.Fatal(err)
	}
	e.m.mountShare = func(tag, target string, flags uintptr) error {
		if err := unix.Mount(filepath.Join(e.shares, tag), target, "", unix.MS_BIND, ""); err != nil {
			return err
		}
		if flags&unix.MS_RDONLY != 0 {
			return remountReadonly(target, flags)
		}
		return nil
	}
	e.busybox = busybox
	// Runs before the reaper stops: every container is deleted, and
	// deletion leaves no share mounted.
	t.Cleanup(func() {
		e.m.mu.Lock()
		var ids []string
		for id := range e.m.containers {
			ids = append(ids, id)
		}
		e.m.mu.Unlock()
		for _, id := range ids {
			if err := e.m.Delete(context.Background(), id); err != nil {
				t.Errorf("cleanup: delete %s: %v", id, err)
			}
		}
		e.m.mu.Lock()
		z := e.m.prestarted
		e.m.prestarted = nil
		e.m.mu.Unlock()
		if z != nil {
			z.discard()
		}
		if n := len(e.m.shares); n != 0 {
			t.Errorf("after every container was deleted, %d shares are still mounted", n)
		}
	})
	return e
}

func findBusybox() (string, error) {
	for _, p := range []string{"/usr/bin/busybox", "/bin/busybox"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", errors.New("no busybox to run in test containers")
}

// rootfs makes a container root <name>/rootfs in the pod share, with
// busybox and a file "name" holding name; it returns its rootfs_path.
func (e *podEnv) rootfs(name string) string {
	e.t.Helper()
	rel := name + "/rootfs"
	dir := filepath.Join(e.share, rel)
	for _, d := range []string{"bin", "proc", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			e.t.Fatal(err)
		}
	}
	b, err := os.ReadFile(e.busybox)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), b, 0o755); err != nil {
		e.t.Fatal(err)
	}
	for _, applet := range []string{"sh", "cat", "sleep", "hostname", "ls", "touch", "echo", "readlink"} {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "name"), []byte(name), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return rel
}

var procMount = &api.Mount{Destination: "/proc", Type: "proc", Source: "proc"}

// request is a create request for container id with root rel in the pod
// share, running script with sh, with /proc mounted.
func request(id, rel, script string, mounts ...*api.Mount) *api.CreateContainerRequest {
	return &api.CreateContainerRequest{
		ContainerId: id,
		RootfsTag:   podTag,
		RootfsPath:  rel,
		Process:     &api.Process{Args: []string{"/bin/sh", "-c", script}, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Mounts:      append([]*api.Mount{procMount}, mounts...),
	}
}

// run creates and starts a container; it returns its init's PID.
func (e *podEnv) run(req *api.CreateContainerRequest) int {
	e.t.Helper()
	ctx := context.Background()
	pid, err := e.m.Create(ctx, req)
	if err != nil {
		e.t.Fatalf("create %s: %v", req.GetContainerId(), err)
	}
	if _, err := e.m.Start(ctx, req.GetContainerId(), ""); err != nil {
		e.t.Fatalf("start %s: %v", req.GetContainerId(), err)
	}
	return pid
}

// wait returns the exit status of a process of container id.
func (e *podEnv) wait(id, eid string) uint32 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := e.m.Wait(ctx, id, eid)
	if err != nil {
		e.t.Fatalf("wait for %s %q: %v", id, eid, err)
	}
	return res.Status
}

// waitFile waits for a container to write the file p (a path in the
// share) and returns its content.
func (e *podEnv) waitFile(p string) string {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(e.share, p))
		if err == nil && strings.HasSuffix(string(b), "\n") {
			return strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s not written: %v", p, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitComm waits until process pid runs the program comm (it execed).
func waitComm(t *testing.T, pid int, comm string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err == nil && strings.TrimSpace(string(b)) == comm {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d runs %q, %v; want %s", pid, b, err, comm)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func nsLink(t *testing.T, pid int, ns string) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func alive(pid int) bool { return unix.Kill(pid, 0) == nil }
