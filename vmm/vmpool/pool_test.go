package vmpool

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/earendil-works/gondolin-containerd/vmm"
)

// procVM is a vmm.VM backed by a real process (sleep), so that pidfds of
// it can be opened and handed over.
type procVM struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProcVM(t *testing.T) *procVM {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	v := &procVM{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(v.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-v.done
	})
	return v
}

func (v *procVM) Pid() int                     { return v.cmd.Process.Pid }
func (v *procVM) Pause(context.Context) error  { return nil }
func (v *procVM) Resume(context.Context) error { return nil }
func (v *procVM) Done() <-chan struct{}        { return v.done }
func (v *procVM) ExitError() error             { return nil }
func (v *procVM) Release() error               { return nil }
func (v *procVM) Stop(context.Context, time.Duration) error {
	_ = v.cmd.Process.Kill()
	<-v.done
	return nil
}
func (v *procVM) Kill(ctx context.Context) error { return v.Stop(ctx, 0) }

// fakeStarter starts procVMs and counts starts and stops.
type fakeStarter struct {
	t       *testing.T
	fail    bool
	started atomic.Int32
	stopped atomic.Int32
	mu      sync.Mutex
	vms     []*VM
}

func (f *fakeStarter) start(ctx context.Context, shape Shape, dir string) (*VM, error) {
	f.started.Add(1)
	if f.fail {
		return nil, os.ErrPermission
	}
	vmProc, fsProc := startProcVM(f.t), startProcVM(f.t)
	pidfd, err := vmm.PidfdOpen(fsProc.Pid())
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	w.Close()
	vm := &VM{
		Dir: dir,
		Instance: &vmm.Instance{VM: vmProc, FileServers: []*vmm.FileServer{
			vmm.AdoptFileServer(fsProc.Pid(), pidfd, filepath.Join(dir, "fs-pod.sock")),
		}},
		Files: []*os.File{r},
		Stop: func(context.Context) {
			f.stopped.Add(1)
			_ = vmProc.Stop(context.Background(), 0)
			_ = os.RemoveAll(dir)
		},
	}
	f.mu.Lock()
	f.vms = append(f.vms, vm)
	f.mu.Unlock()
	return vm, nil
}

// servePool runs a pool of size 1 on a socket in a temporary directory.
func servePool(t *testing.T, f *fakeStarter, exit time.Duration, prime ...Shape) (socket string, done chan error) {
	t.Helper()
	dir := t.TempDir()
	socket = filepath.Join(dir, "pool.sock")
	l, release, err := Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	if _, _, err := Listen(socket); err != ErrRunning {
		t.Fatalf("a second Listen on the same socket: %v, want ErrRunning", err)
	}
	if st, err := os.Stat(socket); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	srv := &Server{Dir: dir, Size: 1, Start: f.start, ShapeIdle: time.Hour, Exit: exit}
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l, prime...) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return socket, done
}

var shape = Shape{MemoryMiB: 512, CPUs: 1, NIC: true}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func claim(t *testing.T, socket string) *Claimed {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := Claim(context.Background(), socket, shape)
		if err != nil {
			t.Fatal(err)
		}
		if c != nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatal("the pool had no VM within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestClaimHandsEachVMOverOnce(t *testing.T) {
	f := &fakeStarter{t: t}
	socket, _ := servePool(t, f, time.Hour)
	first, err := Claim(context.Background(), socket, shape)
	if err != nil || first != nil {
		t.Fatalf("first claim of a new shape: %v, %v; want none (the pool starts one)", first, err)
	}
	a := claim(t, socket)
	if err := a.Accept(); err != nil {
		t.Fatal(err)
	}
	b := claim(t, socket)
	defer b.Reject()
	if a.Dir == b.Dir || a.VMMPid == b.VMMPid {
		t.Fatalf("two claims got the same VM: %s (pid %d)", a.Dir, a.VMMPid)
	}
	f.mu.Lock()
	vm := f.vms[0]
	f.mu.Unlock()
	if a.VMMPid != vm.Instance.VM.Pid() || len(a.FileServers) != 1 || a.FileServers[0].Pid != vm.Instance.FileServers[0].Pid() {
		t.Fatalf("handover %+v does not describe the VM started first", a.Handover)
	}
	if len(a.Files) != 1 || len(a.FileServerPidfds) != 1 || a.VMMPidfd == nil {
		t.Fatalf("handover came with %d files, %d file server pidfds", len(a.Files), len(a.FileServerPidfds))
	}
	// The pidfds are the VM's: a signal through one reaches it.
	if err := vmm.PidfdSignal(a.VMMPidfd, 9); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the VM killed through its handed-over pidfd", func() bool {
		select {
		case <-vm.Instance.VM.Done():
			return true
		default:
			return false
		}
	})
	if n := f.stopped.Load(); n != 0 {
		t.Fatalf("the pool stopped %d VM(s) it had handed over", n)
	}
	a.Close()
}

func TestRejectedVMIsStopped(t *testing.T) {
	f := &fakeStarter{t: t}
	socket, _ := servePool(t, f, time.Hour, shape)
	c := claim(t, socket)
	c.Reject()
	waitFor(t, "the rejected VM stopped", func() bool { return f.stopped.Load() == 1 })
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Fatalf("the rejected VM's directory is still there: %v", err)
	}
}

func TestPrimedShapeIsStartedAtOnce(t *testing.T) {
	f := &fakeStarter{t: t}
	servePool(t, f, time.Hour, shape)
	waitFor(t, "a VM of the primed shape", func() bool { return f.started.Load() == 1 })
	time.Sleep(100 * time.Millisecond)
	if n := f.started.Load(); n != 1 {
		t.Fatalf("%d VMs started for a pool of size 1", n)
	}
}

func TestIdlePoolExitsAndStopsItsVMs(t *testing.T) {
	f := &fakeStarter{t: t}
	_, done := servePool(t, f, 300*time.Millisecond, shape)
	select {
	case err := <-done:
		done <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("the idle pool did not exit")
	}
	if f.started.Load() != 1 || f.stopped.Load() != 1 {
		t.Fatalf("started %d, stopped %d VMs: want the idle one stopped", f.started.Load(), f.stopped.Load())
	}
}

func TestFailedStartsBackOff(t *testing.T) {
	f := &fakeStarter{t: t, fail: true}
	socket, _ := servePool(t, f, time.Hour, shape)
	for i := 0; i < 10; i++ {
		if c, err := Claim(context.Background(), socket, shape); err != nil || c != nil {
			t.Fatalf("claim from a pool whose starts fail: %v, %v", c, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := f.started.Load(); n > 2 {
		t.Fatalf("%d starts in 0.5 s after failures: want them held back", n)
	}
}

func TestParseShape(t *testing.T) {
	got, err := ParseShape(shape.Key())
	if err != nil || got != shape {
		t.Fatalf("ParseShape(Key) = %+v, %v", got, err)
	}
	for _, bad := range []string{"", "{}", `{"memory_mib":512}`, "nonsense"} {
		if _, err := ParseShape(bad); err == nil {
			t.Errorf("ParseShape(%q) accepted", bad)
		}
	}
}

func TestShapesAreBounded(t *testing.T) {
	f := &fakeStarter{t: t}
	dir := t.TempDir()
	l, release, err := Listen(filepath.Join(dir, "pool.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	srv := &Server{Dir: dir, Size: 1, Start: f.start, ShapeIdle: time.Hour, Exit: time.Hour, MaxShapes: 2}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	defer func() {
		cancel()
		<-done
	}()
	socket := filepath.Join(dir, "pool.sock")
	for i, mem := range []uint64{256, 512, 1024} {
		if _, err := Claim(context.Background(), socket, Shape{MemoryMiB: mem, CPUs: 1}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a VM of each shape asked for", func() bool { return f.started.Load() == int32(i+1) })
		time.Sleep(20 * time.Millisecond)
	}
	// The third shape dropped the first, asked for least recently.
	waitFor(t, "the first shape's idle VM stopped", func() bool { return f.stopped.Load() == 1 })
	srv.mu.Lock()
	n := len(srv.shapes)
	_, kept := srv.shapes[Shape{MemoryMiB: 256, CPUs: 1}.Key()]
	srv.mu.Unlock()
	if n != 2 || kept {
		t.Fatalf("%d shapes kept (the first among them: %v); want 2, the first dropped", n, kept)
	}
}
