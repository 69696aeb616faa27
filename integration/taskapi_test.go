//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/console"
)

// exec runs extra processes with their own stdio, user and cwd, and
// returns their exit codes.
func TestExec(t *testing.T) {
	id := startDetached(t, nil, "sleep", "1000")
	waitStatus(t, id, "RUNNING", "after run -d")
	res := ctr(t, nil, "task", "exec", "--exec-id", "e1", id, "sh", "-c", "echo from-exec; echo exec-err >&2; exit 5")
	if res.code != 5 || strings.TrimSpace(res.stdout) != "from-exec" || !strings.Contains(res.stderr, "exec-err") {
		t.Fatalf("exec: %s", res)
	}
	res = ctr(t, nil, "task", "exec", "--exec-id", "e2", "--user", "1000", "--cwd", "/tmp", id, "sh", "-c", "id -u; pwd; cat /proc/1/cmdline | tr '\\0' ' '")
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if res.code != 0 || len(lines) != 3 || lines[0] != "1000" || lines[1] != "/tmp" || !strings.HasPrefix(lines[2], "sleep 1000") {
		t.Fatalf("exec joins the container's PID namespace as the given user and cwd: %s", res)
	}
	// The same exec ID can be used again once the first is deleted.
	if res := ctr(t, nil, "task", "exec", "--exec-id", "e1", id, "true"); res.code != 0 {
		t.Fatalf("reused exec id: %s", res)
	}
}

// exec into a task whose process has exited fails clearly.
func TestExecIntoStoppedTask(t *testing.T) {
	id := startDetached(t, nil, "true")
	waitStatus(t, id, "STOPPED", "")
	res := ctr(t, nil, "task", "exec", "--exec-id", "late", id, "true")
	if res.code == 0 || !strings.Contains(res.stderr, "not running") {
		t.Fatalf("want a clear error: %s", res)
	}
}

// Piped stdin reaches EOF: ctr closes stdin (CloseIO) when its input ends.
func TestStdinEOF(t *testing.T) {
	res := run(t, []byte("line one\nline two\n"), nil, "sh", "-c", "cat; echo done")
	if res.code != 0 || res.stdout != "line one\nline two\ndone\n" {
		t.Fatalf("stdin EOF not delivered: %s", res)
	}
}

// ps lists the guest's processes of the container, not the VMM.
func TestPs(t *testing.T) {
	id := startDetached(t, nil, "sh", "-c", "sleep 1000 & sleep 1001 & wait")
	waitStatus(t, id, "RUNNING", "")
	var pids []int
	deadline := time.Now().Add(30 * time.Second)
	for len(pids) < 3 && time.Now().Before(deadline) {
		res := ctr(t, nil, "task", "ps", id)
		pids = pids[:0]
		for _, line := range strings.Split(res.stdout, "\n")[1:] {
			if f := strings.Fields(line); len(f) > 0 {
				if n, err := strconv.Atoi(f[0]); err == nil {
					pids = append(pids, n)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(pids) != 3 {
		t.Fatalf("want sh and two sleeps, got pids %v", pids)
	}
	for _, p := range pids {
		// Guest PIDs in a fresh PID namespace are small; the QEMU process
		// on the host is not among them.
		if p > 1000 {
			t.Errorf("pid %d looks like a host PID", p)
		}
	}
}

// metrics are cgroup v2 figures: pids measured in the guest, CPU and
// memory on the host (the container's host cgroup, whose limit is the
// VM's memory plus the host overhead: 200 + memory_overhead_mib 128 +
// host_memory_overhead_mib 160 MiB by default).
func TestMetrics(t *testing.T) {
	id := startDetached(t, []string{"--memory-limit", strconv.Itoa(200 << 20)}, "sh", "-c", "x=$(head -c 5000000 /dev/zero | tr '\\0' a); sleep 1000 & wait")
	waitStatus(t, id, "RUNNING", "")
	time.Sleep(2 * time.Second)
	res := ctr(t, nil, "task", "metrics", "--format", "json", id)
	if res.code != 0 {
		t.Fatalf("metrics: %s", res)
	}
	// ctr prints the io.containerd.cgroups.v2.Metrics message itself.
	var d struct {
		Pids struct {
			Current uint64 `json:"current"`
		} `json:"pids"`
		CPU struct {
			UsageUsec uint64 `json:"usage_usec"`
		} `json:"cpu"`
		Memory struct {
			Usage      uint64 `json:"usage"`
			UsageLimit uint64 `json:"usage_limit"`
		} `json:"memory"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &d); err != nil {
		t.Fatalf("decode %q: %v", res.stdout, err)
	}
	if d.Pids.Current < 2 || d.CPU.UsageUsec == 0 || d.Memory.Usage < 1<<20 || d.Memory.UsageLimit != (200+128+160)<<20 {
		t.Fatalf("metrics not measured: %+v\n%s", d, res.stdout)
	}
}

// pause stops the VM, resume lets it go on; state and events follow.
func TestPauseResume(t *testing.T) {
	id := startDetached(t, nil, "sleep", "1000")
	waitStatus(t, id, "RUNNING", "")
	if res := ctr(t, nil, "task", "pause", id); res.code != 0 {
		t.Fatalf("pause: %s", res)
	}
	if st := taskStatus(t, id); st != "PAUSED" {
		t.Fatalf("after pause: %s", st)
	}
	if res := ctr(t, nil, "task", "resume", id); res.code != 0 {
		t.Fatalf("resume: %s", res)
	}
	if st := taskStatus(t, id); st != "RUNNING" {
		t.Fatalf("after resume: %s", st)
	}
	if res := ctr(t, nil, "task", "exec", "--exec-id", "after-resume", id, "true"); res.code != 0 {
		t.Fatalf("the guest does not answer after resume: %s", res)
	}
}

// A container over its memory limit is OOM-killed in the guest: TaskOOM
// comes before TaskExit and the exit status is 137.
func TestOOM(t *testing.T) {
	events := startEvents(t)
	id := newID(t)
	res := ctr(t, nil, "run", "--rm", "--runtime", runtimeName, "--memory-limit", strconv.Itoa(64<<20), testImage(t), id, "sh", "-c", "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived")
	t.Cleanup(func() { assertNoLeftovers(t, id) })
	if res.code != 137 || strings.Contains(res.stdout, "survived") {
		t.Fatalf("want an OOM kill (137): %s", res)
	}
	// Only this container's events: other tests' containers exit too.
	order := events.topicsOf(t, id, "/tasks/oom", "/tasks/exit")
	if len(order) < 2 || order[0] != "/tasks/oom" {
		t.Fatalf("want /tasks/oom before /tasks/exit, got %v", order)
	}
}

// checkpoint is refused clearly.
func TestCheckpointRefused(t *testing.T) {
	id := startDetached(t, nil, "sleep", "1000")
	waitStatus(t, id, "RUNNING", "")
	res := ctr(t, nil, "task", "checkpoint", id)
	if res.code == 0 || !strings.Contains(res.stderr, "not supported") {
		t.Fatalf("want 'not supported': %s", res)
	}
	if st := taskStatus(t, id); st != "RUNNING" {
		t.Fatalf("checkpoint attempt disturbed the task: %s", st)
	}
}

// A real terminal: window size, Ctrl-C to the foreground process, exit code.
func TestTTY(t *testing.T) {
	id := newID(t)
	t.Cleanup(func() { assertNoLeftovers(t, id) })
	cmd := exec.Command("ctr", withBootPathConfig([]string{"run", "--rm", "-t", "--runtime", runtimeName, testImage(t), id, "sh"})...)
	pty, out := startInPty(t, cmd, console.WinSize{Height: 33, Width: 101})
	expect := func(what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(out.String(), what) {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("terminal never showed %q; it shows:\n%s", what, out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitStatus(t, id, "RUNNING", "ctr run -t")
	time.Sleep(time.Second)
	pty.Write([]byte("stty size; tty\r"))
	expect("33 101")
	expect("/dev/pts/")
	if err := pty.Resize(console.WinSize{Height: 40, Width: 120}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	pty.Write([]byte("stty size\r"))
	expect("40 120")
	pty.Write([]byte("sleep 1000\r"))
	time.Sleep(2 * time.Second)
	pty.Write([]byte{3}) // Ctrl-C
	time.Sleep(time.Second)
	pty.Write([]byte("echo alive-$((40+2))\r"))
	expect("alive-42")
	pty.Write([]byte("exit 7\r"))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("ctr run -t did not end; terminal:\n%s", out.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 7 {
		t.Fatalf("ctr run -t exited %d, want 7; terminal:\n%s", code, out.String())
	}
}

// exec -t gives the exec its own terminal.
func TestExecTTY(t *testing.T) {
	id := startDetached(t, nil, "sleep", "1000")
	waitStatus(t, id, "RUNNING", "")
	cmd := exec.Command("ctr", "task", "exec", "-t", "--exec-id", "tty1", id, "sh", "-c", "sleep 1; stty size; tty; exit 4")
	_, out := startInPty(t, cmd, console.WinSize{Height: 21, Width: 77})
	err := cmd.Wait()
	<-time.After(500 * time.Millisecond)
	if cmd.ProcessState.ExitCode() != 4 {
		t.Fatalf("exec -t: %v, terminal %q", err, out.String())
	}
}

// Host bind mounts: rw writes land on the host, ro cannot be written even by
// root in the guest, single files can be bound.
func TestBindMounts(t *testing.T) {
	dir := t.TempDir()
	roDir := t.TempDir()
	os.WriteFile(filepath.Join(roDir, "keep"), []byte("original"), 0o644)
	file := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(file, []byte("10.9.8.7 bound-file\n"), 0o644)
	res := run(t, nil, []string{
		"--mount", "type=bind,src=" + dir + ",dst=/data,options=rbind:rw",
		"--mount", "type=bind,src=" + roDir + ",dst=/ro,options=rbind:ro",
		"--mount", "type=bind,src=" + file + ",dst=/etc/hosts,options=bind:ro",
	}, "sh", "-c", "echo from-guest > /data/out; cat /etc/hosts; echo x > /ro/keep && echo ro-write-worked; mount -o remount,rw /ro 2>/dev/null; echo y > /ro/keep && echo remount-write-worked; true")
	if res.code != 0 {
		t.Fatalf("%s", res)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "out")); string(b) != "from-guest\n" {
		t.Errorf("rw bind: host sees %q", b)
	}
	if !strings.Contains(res.stdout, "bound-file") {
		t.Errorf("file bind not visible: %s", res)
	}
	if strings.Contains(res.stdout, "write-worked") {
		t.Errorf("a read-only bind was written: %s", res)
	}
	if b, _ := os.ReadFile(filepath.Join(roDir, "keep")); string(b) != "original" {
		t.Errorf("read-only bind changed on the host: %q", b)
	}
}

// A read-only rootfs cannot be written.
func TestReadonlyRootfs(t *testing.T) {
	res := run(t, nil, []string{"--read-only"}, "sh", "-c", "touch /newfile && echo wrote")
	if res.code == 0 || strings.Contains(res.stdout, "wrote") {
		t.Fatalf("read-only rootfs was written: %s", res)
	}
}

// Capabilities follow the spec: containerd's default set for root, none for
// a non-root user (so no raw sockets).
func TestCapabilities(t *testing.T) {
	res := run(t, nil, nil, "sh", "-c", "grep -E '^Cap(Bnd|Eff)' /proc/self/status")
	if !strings.Contains(res.stdout, "CapBnd:\t00000000a80425fb") || !strings.Contains(res.stdout, "CapEff:\t00000000a80425fb") {
		t.Fatalf("root capabilities: %s", res)
	}
	res = run(t, nil, []string{"--user", "1000:1000"}, "sh", "-c", "grep CapEff /proc/self/status; ping -c 1 -W 1 127.0.0.1")
	if !strings.Contains(res.stdout, "CapEff:\t0000000000000000") || res.code == 0 {
		t.Fatalf("a non-root user without CAP_NET_RAW pinged: %s", res)
	}
}

// Masked and read-only paths as runc applies them.
func TestMaskedPaths(t *testing.T) {
	res := run(t, nil, nil, "sh", "-c", "wc -c < /proc/kcore; ls /sys/firmware | wc -l; echo 1 > /proc/sys/kernel/panic && echo wrote-proc-sys; true")
	lines := strings.Fields(res.stdout)
	if len(lines) < 2 || lines[0] != "0" || lines[1] != "0" || strings.Contains(res.stdout, "wrote-proc-sys") {
		t.Fatalf("masked/readonly paths not applied: %s", res)
	}
}

type eventLog struct {
	cmd *exec.Cmd
	out *syncBuffer
}

// startEvents follows `ctr events` for the rest of the test.
func startEvents(t *testing.T) *eventLog {
	e := &eventLog{cmd: exec.Command("ctr", "events"), out: &syncBuffer{}}
	e.cmd.Stdout = e.out
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.cmd.Process.Kill(); e.cmd.Wait() })
	time.Sleep(300 * time.Millisecond)
	return e
}

// topics returns, in order, the events seen so far among those named.
func (e *eventLog) topics(t *testing.T, names ...string) []string {
	return e.topicsOf(t, "", names...)
}

// topicsOf is topics for the events whose line names id ("": any).
func (e *eventLog) topicsOf(t *testing.T, id string, names ...string) []string {
	time.Sleep(time.Second)
	var order []string
	for _, line := range strings.Split(e.out.String(), "\n") {
		if id != "" && !strings.Contains(line, id) {
			continue
		}
		for _, n := range names {
			if strings.Contains(line, n+" ") {
				order = append(order, n)
			}
		}
	}
	return order
}

// The guest console carries a container's own steps and failures (the
// create's, which in a booted VM spawns the init); each
// exec's steps only with log_level = "debug", which turns the agent's
// debug lines on (an exec-probed container would fill it otherwise).
func TestConsoleLogDebugLevel(t *testing.T) {
	state := os.Getenv("GONDOLIN_CONTAINERD_STATE")
	if state == "" {
		t.Fatal("GONDOLIN_CONTAINERD_STATE is not set (.cache/dev/env sets it)")
	}
	for _, level := range []string{"info", "debug"} {
		cfg := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf("log_level = %q\n", level)), 0o644); err != nil {
			t.Fatal(err)
		}
		id := startDetached(t, []string{"--runtime-config-path", cfg}, "sleep", "1000")
		if res := ctr(t, nil, "task", "exec", "--exec-id", "probe", id, "true"); res.code != 0 {
			t.Fatalf("exec: %s", res)
		}
		console := filepath.Join(state, "io.containerd.runtime.v2.task", namespace(), id, "console.log")
		b, err := os.ReadFile(console)
		if err != nil {
			t.Fatal(err)
		}
		log := string(b)
		if !strings.Contains(log, "container "+id+" created") {
			t.Fatalf("log_level %s: the console lacks the container's create line:\n%s", level, log)
		}
		// A booted VM forks the container's init at create; one resumed
		// from a snapshot (the default where QEMU and virtiofsd can save a
		// VM) had it prestarted before it was saved (see TestSnapshotBoot).
		if strings.Contains(log, "resumed from a VM snapshot") {
			if !strings.Contains(log, ", prestarted init ") {
				t.Fatalf("log_level %s: a resumed VM's container init was not the prestarted one:\n%s", level, log)
			}
		} else if !strings.Contains(log, ", spawn ") || strings.Contains(log, "prestarted") {
			t.Fatalf("log_level %s: a booted VM's container init was not forked at create:\n%s", level, log)
		}
		execLine := "debug: container " + id + ": exec probe prepared"
		if got := strings.Contains(log, execLine); got != (level == "debug") {
			t.Fatalf("log_level %s: exec lines on the console = %v, want %v:\n%s", level, got, level == "debug", log)
		}
	}
}
