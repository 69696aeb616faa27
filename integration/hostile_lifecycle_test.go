//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gruntime "github.com/earendil-works/gondolin-containerd/runtime"
)

// Issue 14 finding 10: a helper process of the VM that dies, or a guest
// that stops answering, must end the task within a bounded time, and no
// task-API call may hang on it; everything the container made goes at
// delete. Finding 5: the VM's host processes run in the container's host
// cgroup, which bounds them.

// lifecycleCallTimeout is limits.agent_call_timeout in these tests'
// runtime config; lifecycleBound is what each call or exit may take: the
// timeout, a second of QMP quit and two of waiting for QEMU, and slack for
// ctr and a loaded TCG host. It stays below the heartbeat watcher's
// detection (three misses of 5 s + 5 s), so passing proves the bound on
// the call itself.
const (
	lifecycleCallTimeout = 5 * time.Second
	lifecycleBound       = 16 * time.Second
)

func lifecycleConfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	cfg := fmt.Sprintf("[limits]\nagent_call_timeout = %q\n", lifecycleCallTimeout.String())
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// vmState is the shim's state.json of container id.
type vmState struct {
	QEMUPid       int    `json:"qemu_pid"`
	VirtiofsdPids []int  `json:"virtiofsd_pids"`
	NetNSPin      string `json:"netns_pin"`
	HostCgroup    string `json:"host_cgroup"`
}

func readVMState(t *testing.T, id string) vmState {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(gruntime.StateDir(gruntime.DefaultStateRoot, namespace(), id), "state.json"))
	if err != nil {
		t.Fatalf("state of %s: %v", id, err)
	}
	var st vmState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if st.QEMUPid == 0 || len(st.VirtiofsdPids) == 0 {
		t.Fatalf("state of %s names no processes: %s", id, b)
	}
	return st
}

// exitStatus is the task's exit status as containerd has it.
func exitStatus(t *testing.T, id string) uint32 {
	t.Helper()
	ctx, task := loadTask(t, id)
	st, err := task.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st.ExitStatus
}

// waitStopped waits up to bound for the task to stop and says how long it
// took.
func waitStopped(t *testing.T, id string, bound time.Duration, why string) time.Duration {
	t.Helper()
	start := time.Now()
	for taskStatus(t, id) != "STOPPED" {
		if time.Since(start) > bound {
			t.Fatalf("%s: task %s still %q after %s", why, id, taskStatus(t, id), bound)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return time.Since(start)
}

// timed runs ctr and says how long it took.
func timed(t *testing.T, args ...string) (result, time.Duration) {
	start := time.Now()
	res := ctr(t, nil, args...)
	return res, time.Since(start)
}

// assertNothingLeft checks, beyond assertNoLeftovers, that no mount names
// the container's state directory (the network namespace's pin lives
// there) and that no process of the VM is left.
func assertNothingLeft(t *testing.T, id string, st vmState) {
	t.Helper()
	assertNoLeftovers(t, id)
	stateDir := gruntime.StateDir(gruntime.DefaultStateRoot, namespace(), id)
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(mi), "\n") {
			if strings.Contains(line, stateDir) || st.NetNSPin != "" && strings.Contains(line, st.NetNSPin) {
				t.Errorf("mount left behind: %s", line)
			}
		}
	}
	for _, pid := range append([]int{st.QEMUPid}, st.VirtiofsdPids...) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(b), stateDir) {
			t.Errorf("process %d left behind: %s", pid, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	if dir := hostCgroupDir(id); dir != "" {
		t.Errorf("host cgroup left behind: %s", dir)
	}
}

// hostCgroupDir is the container's host cgroup as `ctr run` names it
// (/<namespace>/<id>) if it still exists, on cgroup v1 or v2; "" if not.
func hostCgroupDir(id string) string {
	for i := 0; i < 25; i++ {
		left := ""
		for _, dir := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup"} {
			d := filepath.Join(dir, namespace(), id)
			if _, err := os.Stat(d); err == nil {
				left = d
			}
		}
		if left == "" {
			return ""
		}
		if i == 24 {
			return left
		}
		time.Sleep(200 * time.Millisecond)
	}
	return ""
}

// Killing the container's virtiofsd ends the task with a non-zero status
// within the bound; delete returns at once and leaves nothing.
func TestHostileVirtiofsdKilled(t *testing.T) {
	id := startDetached(t, []string{"--runtime-config-path", lifecycleConfig(t)}, "sleep", "1000")
	waitStatus(t, id, "RUNNING", "container did not start")
	st := readVMState(t, id)
	// Kill the process that serves the share: a sandboxed virtiofsd's
	// child, or virtiofsd itself.
	victim := st.VirtiofsdPids[0]
	if children := childPids(victim); len(children) > 0 {
		victim = children[0]
	}
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := waitStopped(t, id, lifecycleBound, "virtiofsd killed")
	t.Logf("task stopped %s after its virtiofsd was killed", took.Round(100*time.Millisecond))
	if code := exitStatus(t, id); code == 0 {
		t.Errorf("task exited 0 after its virtiofsd was killed; want a killed status")
	}
	res, d := timed(t, "task", "delete", id)
	if res.code != 0 || d > lifecycleBound {
		t.Errorf("task delete took %s: %s", d, res)
	}
	assertNothingLeft(t, id, st)
}

// A wedged guest (QEMU stopped dead): ps, exec and kill each return within
// the bound; the task then ends non-zero; and `ctr task delete -f` on
// another wedged container returns within the bound, leaving nothing.
func TestHostileWedgedGuestCallsBounded(t *testing.T) {
	cfg := lifecycleConfig(t)
	var ids [2]string
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i] = newID(t)
			if res := ctr(t, nil, "run", "-d", "--runtime", runtimeName, "--runtime-config-path", cfg, testImage(t), ids[i], "sleep", "1000"); res.code != 0 {
				t.Errorf("ctr run -d: %s", res)
			}
		}()
	}
	wg.Wait()
	for _, id := range ids {
		t.Cleanup(func() {
			if taskStatus(t, id) != "" {
				ctr(t, nil, "task", "delete", "-f", id)
			}
			ctr(t, nil, "container", "delete", id)
			assertNoLeftovers(t, id)
		})
	}
	if t.Failed() {
		t.FailNow()
	}
	calls, forced := ids[0], ids[1]
	var states [2]vmState
	for i, id := range ids {
		waitStatus(t, id, "RUNNING", "container did not start")
		states[i] = readVMState(t, id)
		if err := syscall.Kill(states[i].QEMUPid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, st := range states {
			syscall.Kill(st.QEMUPid, syscall.SIGCONT)
		}
	}()

	type outcome struct {
		name string
		res  result
		took time.Duration
	}
	out := make(chan outcome, 4)
	for name, args := range map[string][]string{
		"ps":   {"task", "ps", calls},
		"exec": {"task", "exec", "--exec-id", "wedged", calls, "true"},
		"kill": {"task", "kill", "-s", "SIGTERM", calls},
	} {
		go func() {
			res, d := timed(t, args...)
			out <- outcome{name, res, d}
		}()
	}
	go func() {
		res, d := timed(t, "task", "delete", "-f", forced)
		out <- outcome{"delete -f", res, d}
	}()
	for range 4 {
		o := <-out
		t.Logf("%s on a wedged guest returned after %s (exit %d)", o.name, o.took.Round(100*time.Millisecond), o.res.code)
		if o.took > lifecycleBound {
			t.Errorf("%s on a wedged guest took %s, over %s: %s", o.name, o.took, lifecycleBound, o.res)
		}
		if o.name == "delete -f" && o.res.code != 0 {
			t.Errorf("delete -f of a wedged container failed: %s", o.res)
		}
	}
	waitStopped(t, calls, lifecycleBound, "wedged guest after its calls timed out")
	if code := exitStatus(t, calls); code == 0 {
		t.Errorf("wedged task exited 0; want a killed status")
	}
	if res, d := timed(t, "task", "delete", calls); res.code != 0 || d > lifecycleBound {
		t.Errorf("task delete took %s: %s", d, res)
	}
	for i, id := range ids {
		assertNothingLeft(t, id, states[i])
	}
}

// childPids lists pid's child processes.
func childPids(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(task)
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// hostCgroupOf is the cgroup of pid in the memory hierarchy (v1) or the
// unified one (v2), and the directory holding its files.
func hostCgroupOf(t *testing.T, pid int) (path, dir string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var unified string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			if c == "memory" {
				return f[2], filepath.Join("/sys/fs/cgroup/memory", f[2])
			}
		}
		if f[0] == "0" {
			unified = f[2]
		}
	}
	return unified, filepath.Join("/sys/fs/cgroup", unified)
}

func readCgroupInt(t *testing.T, dir string, files ...string) int64 {
	t.Helper()
	for _, f := range files {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
			v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			if err != nil {
				t.Fatalf("%s/%s: %q", dir, f, b)
			}
			return v
		}
	}
	t.Fatalf("none of %v in %s", files, dir)
	return 0
}

// `ctr run --memory-limit` puts QEMU and every virtiofsd into the
// container's cgroup (ctr's /<namespace>/<id>) with memory.max = the VM's
// memory plus the host overhead; the cgroup goes with the container. An
// annotation may not raise the VM over the limit.
func TestHostileCgroupBoundsVM(t *testing.T) {
	const limitMiB = 200
	id := startDetached(t, []string{"--memory-limit", strconv.Itoa(limitMiB << 20), "--cpus", "1"}, "sleep", "1000")
	waitStatus(t, id, "RUNNING", "container did not start")
	st := readVMState(t, id)
	path, dir := hostCgroupOf(t, st.QEMUPid)
	if want := "/" + namespace() + "/" + id; path != want {
		t.Fatalf("QEMU is in cgroup %q, want the container's %q", path, want)
	}
	for _, pid := range st.VirtiofsdPids {
		// The sandboxed virtiofsd serves from a child it forks.
		for _, p := range append([]int{pid}, childPids(pid)...) {
			if got, _ := hostCgroupOf(t, p); got != path {
				t.Errorf("virtiofsd process %d is in cgroup %q, want %q", p, got, path)
			}
		}
	}
	// memory_overhead_mib (128) and host_memory_overhead_mib (160) by
	// default.
	want := int64(limitMiB+128+160) << 20
	if got := readCgroupInt(t, dir, "memory.limit_in_bytes", "memory.max"); got != want {
		t.Errorf("memory limit of the container's host cgroup = %d, want %d", got, want)
	}
	usage := readCgroupInt(t, dir, "memory.usage_in_bytes", "memory.current")
	t.Logf("host cgroup %s: memory usage %d MiB of %d MiB", path, usage>>20, want>>20)

	// Metrics report the host cgroup's memory.
	res := ctr(t, nil, "task", "metrics", "--format", "json", id)
	var m struct {
		Memory struct {
			Usage      uint64 `json:"usage"`
			UsageLimit uint64 `json:"usage_limit"`
		} `json:"memory"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &m); err != nil || m.Memory.UsageLimit != uint64(want) || m.Memory.Usage < 16<<20 {
		t.Errorf("metrics do not report the host cgroup (limit %d): %v %s", want, err, res)
	}

	// A paused VM cannot answer: metrics are the host's, at once.
	if res := ctr(t, nil, "task", "pause", id); res.code != 0 {
		t.Fatalf("pause: %s", res)
	}
	res, took := timed(t, "task", "metrics", "--format", "json", id)
	m.Memory.UsageLimit = 0
	if err := json.Unmarshal([]byte(res.stdout), &m); err != nil || m.Memory.UsageLimit != uint64(want) || took > 5*time.Second {
		t.Errorf("metrics of a paused container (after %s): %v %s", took, err, res)
	}

	ctr(t, nil, "task", "kill", "-s", "SIGKILL", id)
	waitStatus(t, id, "STOPPED", "killed container")
	ctr(t, nil, "task", "delete", id)
	if left := hostCgroupDir(id); left != "" {
		t.Errorf("host cgroup %s left after delete", left)
	}

	// An annotation asking for more than the limit gives is refused,
	// naming the key.
	res = run(t, nil, []string{"--memory-limit", strconv.Itoa(limitMiB << 20), "--annotation", "io.gondolin.vm.memory=4096"}, "true")
	if res.code == 0 || !strings.Contains(res.stderr, "io.gondolin.vm.memory") {
		t.Errorf("an annotation raising the VM over the memory limit was not refused clearly: %s", res)
	}

	// A shim that dies leaves its cgroup to `shim delete`, which removes
	// it once the VM's processes are reaped.
	id = startDetached(t, []string{"--memory-limit", strconv.Itoa(limitMiB << 20)}, "sleep", "1000")
	waitStatus(t, id, "RUNNING", "container did not start")
	st = readVMState(t, id)
	if err := syscall.Kill(shimPID(t, id), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(lifecycleBound)
	for s := taskStatus(t, id); s != "" && s != "STOPPED"; s = taskStatus(t, id) {
		if time.Now().After(deadline) {
			t.Fatalf("task still %s after its shim was killed", s)
		}
		time.Sleep(200 * time.Millisecond)
	}
	ctr(t, nil, "task", "delete", id)
	assertNothingLeft(t, id, st)
}

// A container that OOM-kills a child over and over raises TaskOOM events
// no faster than limits.guest_events_per_second (1 here, with a burst of
// 1): the guest's word reaches containerd's event stream at a bounded rate.
func TestHostileOOMFloodRateLimited(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfg, []byte("[limits]\nguest_events_per_second = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	events := startEvents(t)
	id := newID(t)
	const seconds = 8
	script := fmt.Sprintf(`n=0; s=$(date +%%s); while [ $(( $(date +%%s) - s )) -lt %d ]; do dd if=/dev/zero of=/dev/null bs=48M count=1 2>/dev/null; n=$((n+1)); done; echo kills=$n`, seconds)
	res := ctr(t, nil, "run", "--rm", "--runtime", runtimeName, "--runtime-config-path", cfg, "--memory-limit", strconv.Itoa(16<<20), testImage(t), id, "sh", "-c", script)
	t.Cleanup(func() { assertNoLeftovers(t, id) })
	var kills int
	if _, err := fmt.Sscanf(strings.TrimSpace(res.stdout), "kills=%d", &kills); err != nil {
		t.Fatalf("the container did not report its OOM kills: %s", res)
	}
	ooms := len(events.topicsOf(t, id, "/tasks/oom"))
	t.Logf("%d OOM kills in the guest in %d s, %d TaskOOM events", kills, seconds, ooms)
	if kills < 2*seconds {
		t.Skipf("only %d OOM kills in %d s: too slow a host to flood", kills, seconds)
	}
	if ooms < 1 || ooms > seconds+3 {
		t.Errorf("%d TaskOOM events for %d OOM kills in %d s; want 1 to %d", ooms, kills, seconds, seconds+3)
	}
}
