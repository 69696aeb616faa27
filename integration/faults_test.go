//go:build integration

package integration

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A running container survives a containerd restart and can still be
// listed, killed and deleted.
func TestContainerdRestart(t *testing.T) {
	id := startDetached(t, nil, "sleep", "1000")
	waitStatus(t, id, "RUNNING", "")
	pidfile, err := os.ReadFile("/run/gondolin-dev/containerd.pid")
	if err != nil {
		t.Fatalf("private containerd pid: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidfile)))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	up := exec.Command("../hack/dev-up.sh")
	if out, err := up.CombinedOutput(); err != nil {
		t.Fatalf("restart containerd: %v\n%s", err, out)
	}
	waitStatus(t, id, "RUNNING", "after containerd restarted")
	if res := ctr(t, nil, "task", "exec", "--exec-id", "after-restart", id, "echo", "still-here"); res.code != 0 || !strings.Contains(res.stdout, "still-here") {
		t.Fatalf("exec after containerd restart: %s", res)
	}
}

// A shim that dies takes its VM with it, and containerd's cleanup removes
// everything of the container.
func TestShimKilled(t *testing.T) {
	id := startDetached(t, nil, "sleep", "1000")
	waitStatus(t, id, "RUNNING", "")
	shims := pidsOf("containerd-shim-gondolin-v1 -namespace " + namespace() + " -id " + id + " ")
	if len(shims) != 1 {
		t.Fatalf("want one shim for %s, found %v", id, shims)
	}
	if err := syscall.Kill(shims[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// containerd notices, runs `shim delete` and drops the task.
	deadline := time.Now().Add(60 * time.Second)
	for st := taskStatus(t, id); st != "" && st != "STOPPED"; st = taskStatus(t, id) {
		if time.Now().After(deadline) {
			t.Fatalf("task still %s after its shim was killed", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	ctr(t, nil, "task", "delete", id)
	assertNoLeftovers(t, id)
}

// A wedged VM (QEMU stopped dead) turns into a task exit within a bounded
// time instead of a hang.
func TestWedgedVM(t *testing.T) {
	id := startDetached(t, nil, "sleep", "1000")
	waitStatus(t, id, "RUNNING", "")
	// From its state: a VM from the VM pool does not name its container.
	qemu := []int{vmmPid(t, id)}
	if qemu[0] == 0 {
		t.Fatalf("no VMM recorded for %s", id)
	}
	if err := syscall.Kill(qemu[0], syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	deadline := start.Add(90 * time.Second)
	for taskStatus(t, id) != "STOPPED" {
		if time.Now().After(deadline) {
			syscall.Kill(qemu[0], syscall.SIGCONT)
			t.Fatalf("a wedged VM was not turned into an exit within 90s")
		}
		time.Sleep(time.Second)
	}
	t.Logf("wedged VM detected after %s", time.Since(start).Round(time.Second))
}

// Update changes the limits inside the guest; more memory than the VM has
// is refused clearly.
func TestUpdateResources(t *testing.T) {
	id := startDetached(t, []string{"--memory-limit", strconv.Itoa(256 << 20)}, "sleep", "1000")
	waitStatus(t, id, "RUNNING", "")
	ctx, task := loadTask(t, id)
	limit := int64(100 << 20)
	if err := task.Update(ctx, containerd.WithResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})); err != nil {
		t.Fatalf("update: %v", err)
	}
	// ctr's default spec mounts no cgroup file system in the container
	// (runc's neither), and Metrics report the host cgroup's memory (the
	// VM's), so the guest's new limit shows in what it does: a process
	// that needs more than 100 MiB is OOM-killed.
	res := ctr(t, nil, "task", "exec", "--exec-id", "over-limit", id, "sh", "-c", "x=$(head -c 120000000 /dev/zero | tr '\\0' a); echo survived")
	if res.code != 137 || strings.Contains(res.stdout, "survived") {
		t.Fatalf("want the guest to OOM-kill a process over the updated 100 MiB limit (137): %s", res)
	}
	huge := int64(64 << 30)
	err := task.Update(ctx, containerd.WithResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &huge}}))
	if err == nil || !strings.Contains(err.Error(), "booted with") {
		t.Fatalf("want a clear refusal of a limit above the VM's memory, got %v", err)
	}
}
