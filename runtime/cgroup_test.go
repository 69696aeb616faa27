package runtime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/earendil-works/gondolin-containerd/config"
)

func TestHostCgroupPath(t *testing.T) {
	for in, want := range map[string]string{
		"":                        "",
		"/default/c1":             "/default/c1",
		"default/c1":              "/default/c1",
		"/kubepods/pod1/c1/":      "/kubepods/pod1/c1",
		"system.slice:docker:abc": "/system.slice/docker-abc.scope",
		":docker:abc":             "/system.slice/docker-abc.scope",
		"kubepods-besteffort-pod12.slice:cri-containerd:c1": "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-c1.scope",
		"-.slice::c1":           "/c1.scope",
		"user.slice::sub.slice": "/user.slice/sub.slice",
	} {
		got, err := hostCgroupPath(in)
		if err != nil || got != want {
			t.Errorf("hostCgroupPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"/", "/a/../../etc", "../x", "system.slice:docker:", "no-suffix:docker:abc", "a--b.slice:x:y", "/a/b.slice/../x"} {
		if got, err := hostCgroupPath(bad); err == nil {
			t.Errorf("hostCgroupPath(%q) = %q, want an error", bad, got)
		}
	}
}

func TestVMCgroupLimits(t *testing.T) {
	quota, period := int64(150000), uint64(100000)
	spec := &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &quota, Period: &period}}}}
	lim := vmCgroupLimits(spec, 428, 2, 160)
	if lim.memoryBytes != (428+160)<<20 || lim.cpuQuota != 200000 || lim.cpuPeriod != 100000 {
		t.Errorf("limits = %+v", lim)
	}
	lim = vmCgroupLimits(&specs.Spec{}, 512, 1, 160)
	if lim.memoryBytes != (512+160)<<20 || lim.cpuQuota != 0 {
		t.Errorf("limits without a quota = %+v", lim)
	}
}

func TestV1Figures(t *testing.T) {
	f := v1Figures(mustV1Metrics())
	if f.cpu.UsageUsec != 2000 || f.memory.Usage != 300<<20 || f.memory.UsageLimit != 600<<20 || f.memory.InactiveFile != 7 || f.events.OomKill != 1 {
		t.Errorf("figures = %+v %+v %+v", f.cpu, f.memory, f.events)
	}
}

// The host's CPU and memory figures replace the guest's; the guest's pids
// stay, and malformed guest bytes do not keep the host's figures out.
func TestMergeHostFigures(t *testing.T) {
	guest, err := proto.Marshal(&v2stats.Metrics{
		Pids:   &v2stats.PidsStat{Current: 3},
		CPU:    &v2stats.CPUStat{UsageUsec: 1},
		Memory: &v2stats.MemoryStat{Usage: 1, UsageLimit: 1 << 40, InactiveFile: 1 << 40},
	})
	if err != nil {
		t.Fatal(err)
	}
	host := hostFigures{
		cpu:    &v2stats.CPUStat{UsageUsec: 5000},
		memory: &v2stats.MemoryStat{Usage: 200 << 20, UsageLimit: 700 << 20},
		events: &v2stats.MemoryEvents{OomKill: 2},
	}
	for name, in := range map[string][]byte{"guest": guest, "garbage": []byte("\xff\xff\xff")} {
		b, err := mergeHostFigures(in, host)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var m v2stats.Metrics
		if err := proto.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if m.GetCPU().GetUsageUsec() != 5000 || m.GetMemory().GetUsage() != 200<<20 || m.GetMemory().GetUsageLimit() != 700<<20 ||
			m.GetMemory().GetInactiveFile() != 0 || m.GetMemoryEvents().GetOomKill() != 2 {
			t.Errorf("%s: merged = %v", name, &m)
		}
		if name == "guest" && m.GetPids().GetCurrent() != 3 {
			t.Errorf("guest pids lost: %v", &m)
		}
	}
}

// A guest flooding OOM events gets no more than perSecond of them
// published, and is not asked any faster than that.
func TestRelayOOMRateLimited(t *testing.T) {
	var asked, published atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	relayOOM(ctx, "c1", 10, func(ctx context.Context) (string, error) {
		n := asked.Add(1)
		if n%2 == 0 {
			return "other", nil // another container's: never published
		}
		return "c1", nil
	}, func(id string) {
		if id == "c1" {
			published.Add(1)
		}
	})
	// A burst of 10, then 10 a second for 1.5 s.
	if a := asked.Load(); a > 26 {
		t.Errorf("the guest was asked %d times in 1.5 s; want at most 26", a)
	}
	if p := published.Load(); p > 13 || p < 5 {
		t.Errorf("%d events published in 1.5 s; want 5 to 13", p)
	}
}

// relayOOM ends with its context even while the guest does not answer.
func TestRelayOOMEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		relayOOM(ctx, "c1", 10, func(ctx context.Context) (string, error) {
			<-ctx.Done()
			return "", ctx.Err()
		}, func(string) {})
		close(done)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("relayOOM did not return after its context ended")
	}
}

// fakeVM is a VMM that never answers; Stop ends it.
type fakeVM struct {
	once  sync.Once
	done  chan struct{}
	stops atomic.Int64
}

func newFakeVM() *fakeVM                       { return &fakeVM{done: make(chan struct{})} }
func (v *fakeVM) Pid() int                     { return 0 }
func (v *fakeVM) Pause(context.Context) error  { return nil }
func (v *fakeVM) Resume(context.Context) error { return nil }
func (v *fakeVM) Done() <-chan struct{}        { return v.done }
func (v *fakeVM) ExitError() error             { return errors.New("killed") }
func (v *fakeVM) Release() error               { return nil }
func (v *fakeVM) Stop(context.Context, time.Duration) error {
	v.stops.Add(1)
	v.once.Do(func() { close(v.done) })
	return nil
}
func (v *fakeVM) Kill(ctx context.Context) error { return v.Stop(ctx, 0) }

func testContainer(t *testing.T, timeout time.Duration) (*Container, *fakeVM) {
	cfg := config.Default(t.TempDir())
	cfg.Limits.AgentCallTimeout = config.Duration{Duration: timeout}
	vm := newFakeVM()
	rt := New(Config{Runtime: cfg})
	c := &Container{
		ID: "c1", rt: rt,
		execs: map[string]*Process{}, stopping: make(chan struct{}),
	}
	c.pod = newPod(rt, c)
	c.pod.sb = &sandbox{vm: vm}
	c.init = newProcess(c, "", Stdio{}, &hostIO{})
	return c, vm
}

// A guest that does not answer within limits.agent_call_timeout has its
// VM stopped, and the call returns Unavailable instead of hanging.
func TestGuestCallWedged(t *testing.T) {
	c, vm := testContainer(t, 100*time.Millisecond)
	start := time.Now()
	err := c.guestCall(context.Background(), "list processes", func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "agent_call_timeout") {
		t.Fatalf("want Unavailable naming the limit, got %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the call took %s", d)
	}
	if vm.stops.Load() != 1 {
		t.Errorf("VM stopped %d times, want once", vm.stops.Load())
	}
	// A second wedged call stops nothing more.
	_ = c.guestCall(context.Background(), "again", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	if vm.stops.Load() != 1 {
		t.Errorf("VM stopped %d times, want once", vm.stops.Load())
	}
}

// A caller that gives up first does not get the VM stopped, nor does a
// guest that answers; a paused container fails at once.
func TestGuestCallNotWedged(t *testing.T) {
	c, vm := testContainer(t, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_ = c.guestCall(ctx, "ps", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	if err := c.guestCall(context.Background(), "ps", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	c.init.state = initPaused{}
	if err := c.guestCall(context.Background(), "ps", func(context.Context) error { t.Error("called while paused"); return nil }); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("paused: %v", err)
	}
	if vm.stops.Load() != 0 {
		t.Errorf("VM stopped %d times, want never", vm.stops.Load())
	}
}

// A SIGKILL the guest acknowledges but never acts on stops the VM.
func TestEnsureInitExits(t *testing.T) {
	c, vm := testContainer(t, 100*time.Millisecond)
	c.ensureInitExits()
	if vm.stops.Load() != 1 {
		t.Errorf("VM stopped %d times, want once", vm.stops.Load())
	}
	c2, vm2 := testContainer(t, time.Second)
	c2.init.setExited(137, time.Now())
	c2.ensureInitExits()
	if vm2.stops.Load() != 0 {
		t.Errorf("VM of an exited init stopped")
	}
}

// removeHostCgroup refuses nothing it should not touch: "" and "/" are
// no-ops, a missing cgroup is fine.
func TestRemoveHostCgroupNoop(t *testing.T) {
	for _, p := range []string{"", "/", "/gondolin-test-missing-" + filepath.Base(t.TempDir())} {
		if err := removeHostCgroup(p); err != nil {
			t.Errorf("removeHostCgroup(%q): %v", p, err)
		}
	}
}

// On a host where the test may create cgroups, a process joins the
// container's cgroup with the VM's memory limit, and the cgroup goes at
// removeHostCgroup (what the host state's cleanup runs).
func TestHostCgroupLifecycle(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	path := "/gondolin-unit-" + filepath.Base(t.TempDir())
	cg, err := openHostCgroup(path, hostCgroupLimits{memoryBytes: 300 << 20, cpuQuota: 100000, cpuPeriod: 100000})
	if err != nil {
		t.Skipf("cannot create cgroups here: %v", err)
	}
	defer removeHostCgroup(cg.path)
	if !cg.created {
		t.Fatal("a new cgroup not marked created")
	}
	f, err := cg.figures()
	if err != nil {
		t.Fatal(err)
	}
	if f.memory.GetUsageLimit() != 300<<20 {
		t.Errorf("memory limit %d, want %d", f.memory.GetUsageLimit(), 300<<20)
	}
	if err := removeHostCgroup(cg.path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cgroupsRoot, "memory", path)); !errors.Is(err, os.ErrNotExist) {
		if _, err2 := os.Stat(filepath.Join(cgroupsRoot, path)); !errors.Is(err2, os.ErrNotExist) {
			t.Errorf("cgroup %s still there after remove", path)
		}
	}
}

func mustV1Metrics() *v1stats.Metrics {
	return &v1stats.Metrics{
		CPU: &v1stats.CPUStat{Usage: &v1stats.CPUUsage{Total: 2_000_000, User: 1_000_000, Kernel: 1_000_000}},
		Memory: &v1stats.MemoryStat{
			TotalInactiveFile: 7,
			Usage:             &v1stats.MemoryEntry{Usage: 300 << 20, Limit: 600 << 20},
		},
		MemoryOomControl: &v1stats.MemoryOomControl{OomKill: 1},
	}
}

// Whatever the guest sends as its metrics, the merge keeps the host's
// figures and never fails or panics.
func FuzzMergeHostFigures(f *testing.F) {
	seed, _ := proto.Marshal(&v2stats.Metrics{Pids: &v2stats.PidsStat{Current: 3}, Memory: &v2stats.MemoryStat{Usage: 1 << 40}})
	f.Add(seed)
	f.Add([]byte{})
	f.Add([]byte("\x0a\xff\xff\xff\xff\x0f"))
	host := hostFigures{
		cpu:    &v2stats.CPUStat{UsageUsec: 5000},
		memory: &v2stats.MemoryStat{Usage: 200 << 20, UsageLimit: 700 << 20},
		events: &v2stats.MemoryEvents{OomKill: 2},
	}
	f.Fuzz(func(t *testing.T, guest []byte) {
		b, err := mergeHostFigures(guest, host)
		if err != nil {
			t.Fatal(err)
		}
		var m v2stats.Metrics
		if err := proto.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m.GetCPU().GetUsageUsec() != 5000 || m.GetMemory().GetUsage() != 200<<20 || m.GetMemory().GetUsageLimit() != 700<<20 || m.GetMemoryEvents().GetOomKill() != 2 {
			t.Fatalf("host figures lost: %v", &m)
		}
	})
}

// A cgroupsPath, plain or systemd-style, becomes an absolute path below
// the hierarchies' roots that never climbs out of them, or an error.
func FuzzHostCgroupPath(f *testing.F) {
	for _, s := range []string{"/default/c1", "system.slice:docker:abc", "kubepods-besteffort-pod12.slice:cri-containerd:c1", "a/../../b", ":x:y", "-.slice::c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, err := hostCgroupPath(in)
		if err != nil || in == "" {
			return
		}
		if !strings.HasPrefix(p, "/") || p == "/" || filepath.Clean(p) != p {
			t.Fatalf("hostCgroupPath(%q) = %q", in, p)
		}
		for _, el := range strings.Split(p, "/") {
			if el == ".." {
				t.Fatalf("hostCgroupPath(%q) = %q climbs out", in, p)
			}
		}
	})
}

// The smallest memory limit above a VM's cgroup is found in either layout,
// "max" and v1's unlimited value are none, and a VM that does not fit is
// refused naming the cgroup and what to do.
func TestAncestorMemoryLimit(t *testing.T) {
	write := func(root, dir, file, v string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, dir, file), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v2 := t.TempDir()
	write(v2, "kubepods", "memory.max", "max")
	write(v2, "kubepods/burstable", "memory.max", strconv.Itoa(2<<30))
	write(v2, "kubepods/burstable/pod1", "memory.max", strconv.Itoa(64<<20))
	write(v2, "kubepods/burstable/pod1/vm", "memory.max", strconv.Itoa(1<<40)) // the VM's own: not an ancestor
	if lim, at := ancestorMemoryLimit(v2, true, "/kubepods/burstable/pod1/vm"); lim != 64<<20 || at != "/kubepods/burstable/pod1" {
		t.Errorf("v2: %d at %q", lim, at)
	}
	err := checkAncestorMemory(v2, true, "/kubepods/burstable/pod1/vm", 672<<20, 160)
	if err == nil || !strings.Contains(err.Error(), "/kubepods/burstable/pod1 above the VM's allows 64 MiB") || !strings.Contains(err.Error(), "overhead.podFixed") {
		t.Errorf("v2 refusal: %v", err)
	}
	if err := checkAncestorMemory(v2, true, "/kubepods/burstable/pod2/vm", 672<<20, 160); err != nil {
		t.Errorf("under a 2 GiB parent: %v", err)
	}
	v1 := t.TempDir()
	write(v1, "memory/docker", "memory.limit_in_bytes", "9223372036854771712")
	if lim, _ := ancestorMemoryLimit(v1, false, "/docker/c1"); lim != 0 {
		t.Errorf("v1 unlimited parent read as %d", lim)
	}
	write(v1, "memory/kubepods/pod1", "memory.limit_in_bytes", strconv.Itoa(352<<20))
	if lim, at := ancestorMemoryLimit(v1, false, "/kubepods/pod1/c1"); lim != 352<<20 || at != "/kubepods/pod1" {
		t.Errorf("v1: %d at %q", lim, at)
	}
}
