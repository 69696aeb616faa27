//go:build integration

package integration

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A command's output, error output and exit code come back as with runc,
// from a guest kernel that is not the host's.
func TestRunOutputAndExitCode(t *testing.T) {
	res := run(t, nil, nil, "sh", "-c", "uname -r; echo to-stdout; echo to-stderr >&2; exit 7")
	if res.code != 7 {
		t.Fatalf("want exit 7: %s", res)
	}
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if len(lines) != 2 || lines[1] != "to-stdout" {
		t.Fatalf("stdout: %s", res)
	}
	if guest := strings.TrimSpace(lines[0]); guest == "" || guest == hostKernel(t) {
		t.Errorf("guest kernel %q must differ from the host's %q", guest, hostKernel(t))
	}
	if !strings.Contains(res.stderr, "to-stderr") {
		t.Errorf("stderr lost: %s", res)
	}
}

func TestRunExitZero(t *testing.T) {
	if res := run(t, nil, nil, "true"); res.code != 0 || res.stdout != "" {
		t.Fatalf("true: %s", res)
	}
}

// A process killed by a signal exits 128+signal.
func TestExitBySignal(t *testing.T) {
	// sh is PID 1 of its PID namespace and so immune to its own signals;
	// its child is not.
	res := run(t, nil, nil, "sh", "-c", "sh -c 'kill -SEGV $$'; exit $?")
	if res.code != 128+int(syscall.SIGSEGV) {
		t.Fatalf("want %d: %s", 128+int(syscall.SIGSEGV), res)
	}
}

// Binary stdin arrives intact.
func TestStdinBinary(t *testing.T) {
	data := make([]byte, 4<<20)
	_, _ = rand.Read(data)
	sum := sha256.Sum256(data)
	// ctr never closes the stdin FIFO on EOF (with runc either), so the
	// guest reads exactly the size it was sent.
	res := run(t, data, nil, "sh", "-c", fmt.Sprintf("head -c %d | sha256sum", len(data)))
	if res.code != 0 || !strings.HasPrefix(res.stdout, hex.EncodeToString(sum[:])) {
		t.Fatalf("want sha256 %x: %s", sum, res)
	}
}

// ctr sends CloseIO the moment its input ends, while up to 64 KiB may
// still sit in the stdin FIFO: all of it reaches the process before EOF
// (the shim used to end the stream at once and drop it, 1 run in 10).
func TestStdinCompleteBeforeEOF(t *testing.T) {
	data := make([]byte, 4<<20)
	_, _ = rand.Read(data)
	sum := sha256.Sum256(data)
	for i := 0; i < 5; i++ {
		res := run(t, data, nil, "sha256sum")
		if res.code != 0 || !strings.HasPrefix(res.stdout, hex.EncodeToString(sum[:])) {
			t.Fatalf("run %d: want all 4 MiB, then EOF (sha256 %x): %s", i, sum, res)
		}
	}
}

// Binary stdout arrives intact and complete, up to the last byte written
// before exit.
func TestStdoutBinaryComplete(t *testing.T) {
	res := run(t, nil, nil, "sh", "-c", "head -c 8388608 /dev/urandom > /tmp/blob; sha256sum /tmp/blob >&2; cat /tmp/blob")
	if res.code != 0 {
		t.Fatalf("%s", res)
	}
	sum := sha256.Sum256([]byte(res.stdout))
	if len(res.stdout) != 8<<20 || !strings.HasPrefix(res.stderr, hex.EncodeToString(sum[:])) {
		t.Fatalf("got %d bytes with sha256 %x; the guest reported %q", len(res.stdout), sum, res.stderr)
	}
}

// The OCI process's user, groups, cwd, env, hostname and rlimits apply.
func TestProcessSettings(t *testing.T) {
	res := run(t, nil, []string{"--user", "1000:1000", "--cwd", "/tmp", "--env", "GREETING=hello world", "--hostname", "vmbox"},
		"sh", "-c", `id -u; id -g; pwd; echo "$GREETING"; hostname; ulimit -n; cat /proc/1/cmdline | tr '\0' ' '`)
	if res.code != 0 {
		t.Fatalf("%s", res)
	}
	got := strings.Split(strings.TrimSpace(res.stdout), "\n")
	want := []string{"1000", "1000", "/tmp", "hello world", "vmbox"}
	if len(got) < len(want)+2 {
		t.Fatalf("short output: %s", res)
	}
	for i, w := range want {
		if got[i] != w {
			t.Errorf("line %d: got %q, want %q (%s)", i, got[i], w, res)
		}
	}
	// containerd's default spec sets RLIMIT_NOFILE to 1024.
	if got[5] != "1024" {
		t.Errorf("ulimit -n = %s, want containerd's default 1024", got[5])
	}
	// The container's process is PID 1 of its PID namespace, as with runc.
	if !strings.HasPrefix(got[6], "sh -c") {
		t.Errorf("PID 1 is %q, want the container's sh", got[6])
	}
}

// A command that does not exist fails the run with its name in the error,
// and leaves no VM behind (run registers the leftover check).
func TestCommandNotFound(t *testing.T) {
	res := run(t, nil, nil, "/no/such/binary")
	if res.code == 0 || !strings.Contains(res.stderr, "/no/such/binary") {
		t.Fatalf("want a failure naming the binary: %s", res)
	}
}

// A bad io.gondolin annotation fails the create, naming key and choices.
func TestBadAnnotation(t *testing.T) {
	res := run(t, nil, []string{"--annotation", "io.gondolin.net.mode=wide"}, "true")
	if res.code == 0 || !strings.Contains(res.stderr, "io.gondolin.net.mode") || !strings.Contains(res.stderr, "policy, open or none") {
		t.Fatalf("want a clear annotation error: %s", res)
	}
	res = run(t, nil, []string{"--annotation", "io.gondolin.vm.gpus=1"}, "true")
	if res.code == 0 || !strings.Contains(res.stderr, "io.gondolin.vm.gpus is not known") {
		t.Fatalf("want an unknown-annotation error: %s", res)
	}
}

// A missing kernel fails the create, saying which file and how to get it.
func TestMissingKernel(t *testing.T) {
	// The same error whether or not snapshot boot (on by default where
	// the virtiofsd can save a VM, as the Rust one can) looks first.
	for _, extra := range []string{"", fmt.Sprintf("virtiofsd_path = %q\nsnapshot_dir = %q\n", rustVirtiofsd(t), t.TempDir())} {
		cfg := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(cfg, []byte("kernel_path = \"/nonexistent/vmlinuz\"\n"+extra), 0o644); err != nil {
			t.Fatal(err)
		}
		res := run(t, nil, []string{"--runtime-config-path", cfg}, "true")
		if res.code == 0 || !strings.Contains(res.stderr, "/nonexistent/vmlinuz") || !strings.Contains(res.stderr, "make images") {
			t.Fatalf("with %q: want an error naming the kernel and make images: %s", extra, res)
		}
	}
}

// A bad runtime config is refused with the key and what is accepted.
func TestBadRuntimeConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfg, []byte("accelerator = \"warp\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := run(t, nil, []string{"--runtime-config-path", cfg}, "true")
	if res.code == 0 || !strings.Contains(res.stderr, `accelerator = "warp": accepted values are auto, kvm, tcg`) {
		t.Fatalf("want a config error: %s", res)
	}
}

// Writes land in the container's snapshot and are visible from the host.
func TestRootfsWritesReachSnapshot(t *testing.T) {
	id := newID(t)
	marker := "written-in-the-vm-" + id
	res := ctr(t, nil, "run", "--runtime", runtimeName, testImage(t), id, "sh", "-c", "echo "+marker+" > /marker")
	t.Cleanup(func() {
		ctr(t, nil, "task", "delete", id)
		ctr(t, nil, "container", "delete", id)
		assertNoLeftovers(t, id)
	})
	if res.code != 0 {
		t.Fatalf("%s", res)
	}
	root := os.Getenv("GONDOLIN_CONTAINERD_ROOT")
	if root == "" {
		t.Fatal("GONDOLIN_CONTAINERD_ROOT is not set (.cache/dev/env sets it)")
	}
	matches, _ := filepath.Glob(filepath.Join(root, "io.containerd.snapshotter.v1.overlayfs", "snapshots", "*", "fs", "marker"))
	for _, m := range matches {
		if b, err := os.ReadFile(m); err == nil && strings.TrimSpace(string(b)) == marker {
			return
		}
	}
	t.Fatalf("no snapshot upper dir holds /marker with %q (looked at %v)", marker, matches)
}

// Kill stops a running container; delete removes its VM, file server,
// mounts and state.
func TestKillAndDelete(t *testing.T) {
	id := startDetached(t, nil, "sleep", "1000")
	waitStatus(t, id, "RUNNING", "after run -d")
	if left := leftovers(id); len(left) < 2 {
		t.Fatalf("a running container should show its VM and file server, found %v", left)
	}
	if res := ctr(t, nil, "task", "kill", "-s", "SIGKILL", id); res.code != 0 {
		t.Fatalf("kill: %s", res)
	}
	waitStatus(t, id, "STOPPED", "after SIGKILL")
	if res := ctr(t, nil, "task", "delete", id); res.code != 0 {
		t.Fatalf("delete: %s", res)
	}
	assertNoLeftovers(t, id)
}

// kill --all reaches every process of the container.
func TestKillAll(t *testing.T) {
	id := startDetached(t, nil, "sh", "-c", "trap '' TERM; sleep 1000 & sleep 1000 & wait")
	waitStatus(t, id, "RUNNING", "after run -d")
	if res := ctr(t, nil, "task", "kill", "--all", "-s", "SIGKILL", id); res.code != 0 {
		t.Fatalf("kill --all: %s", res)
	}
	waitStatus(t, id, "STOPPED", "after kill --all")
}

// A foreground run killed from outside exits 128+signal.
func TestKillForegroundExitStatus(t *testing.T) {
	id := newID(t)
	cmd := exec.Command("ctr", withBootPathConfig([]string{"run", "--rm", "--runtime", runtimeName, testImage(t), id, "sleep", "1000"})...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { assertNoLeftovers(t, id) })
	waitStatus(t, id, "RUNNING", "after ctr run")
	if res := ctr(t, nil, "task", "kill", "-s", "SIGKILL", id); res.code != 0 {
		t.Fatalf("kill: %s", res)
	}
	err := cmd.Wait()
	if cmd.ProcessState.ExitCode() != 137 {
		t.Fatalf("ctr run exited %v, want 137; output %q", err, out.String())
	}
}

// QEMU dying under a running container ends the task with a non-zero
// status, and the shim cleans up.
func TestVMKilled(t *testing.T) {
	id := startDetached(t, nil, "sleep", "1000")
	waitStatus(t, id, "RUNNING", "after run -d")
	var qemuPid int
	for _, l := range leftovers(id) {
		if strings.Contains(l, "qemu-system") {
			fmt.Sscanf(l, "process %d:", &qemuPid)
		}
	}
	if qemuPid == 0 {
		t.Fatalf("no qemu process for %s: %v", id, leftovers(id))
	}
	if err := syscall.Kill(qemuPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, id, "STOPPED", "after qemu was killed")
	res := ctr(t, nil, "task", "delete", id)
	if res.code != 0 {
		t.Fatalf("delete: %s", res)
	}
	if !strings.Contains(res.stdout+res.stderr, "137") {
		t.Errorf("want exit status 137 reported by delete: %s", res)
	}
	// containerd itself stays healthy.
	if res := ctr(t, nil, "version"); res.code != 0 {
		t.Fatalf("containerd unhealthy: %s", res)
	}
}

// The file:// log URI receives stdout and stderr.
func TestFileLogURI(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "out.log")
	id := newID(t)
	res := ctr(t, nil, "run", "--rm", "--runtime", runtimeName, "--log-uri", "file://"+logFile, testImage(t), id, "sh", "-c", "echo to-file; echo err-to-file >&2")
	t.Cleanup(func() { assertNoLeftovers(t, id) })
	if res.code != 0 {
		t.Fatalf("%s", res)
	}
	b, _ := os.ReadFile(logFile)
	if !strings.Contains(string(b), "to-file") || !strings.Contains(string(b), "err-to-file") {
		t.Fatalf("log file holds %q", b)
	}
}

// The binary:// log URI starts the logger with stdout on fd 3, stderr on
// fd 4, as nerdctl's logging driver expects.
func TestBinaryLogURI(t *testing.T) {
	dir := t.TempDir()
	logger := filepath.Join(dir, "logger.sh")
	script := "#!/bin/sh\nexec 5>&-\ncat <&3 > " + dir + "/stdout &\ncat <&4 > " + dir + "/stderr &\nwait\n"
	if err := os.WriteFile(logger, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	id := newID(t)
	res := ctr(t, nil, "run", "--rm", "--runtime", runtimeName, "--log-uri", "binary://"+logger, testImage(t), id, "sh", "-c", "echo via-binary; echo err-via-binary >&2")
	t.Cleanup(func() { assertNoLeftovers(t, id) })
	if res.code != 0 {
		t.Fatalf("%s", res)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := os.ReadFile(filepath.Join(dir, "stdout"))
		errOut, _ := os.ReadFile(filepath.Join(dir, "stderr"))
		if strings.Contains(string(out), "via-binary") && strings.Contains(string(errOut), "err-via-binary") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("logger got stdout %q stderr %q", out, errOut)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Task events reach containerd in order.
func TestEvents(t *testing.T) {
	cmd := exec.Command("ctr", "events")
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	time.Sleep(300 * time.Millisecond)
	res := run(t, nil, nil, "true")
	if res.code != 0 {
		t.Fatalf("%s", res)
	}
	time.Sleep(time.Second)
	cmd.Process.Kill()
	cmd.Wait()
	var order []string
	for _, line := range strings.Split(out.String(), "\n") {
		for _, topic := range []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"} {
			// Only this test's namespace: other namespaces' tasks (CRI's
			// k8s.io) may come and go meanwhile.
			if strings.Contains(line, " "+namespace()+" "+topic+" ") {
				order = append(order, topic)
			}
		}
	}
	if got := strings.Join(order, " "); got != "/tasks/create /tasks/start /tasks/exit /tasks/delete" {
		t.Fatalf("events in order %q; all events:\n%s", got, out.String())
	}
}

// Several containers run side by side, each in its own VM.
func TestConcurrentContainers(t *testing.T) {
	a := startDetached(t, nil, "sleep", "1000")
	b := startDetached(t, nil, "sleep", "1000")
	waitStatus(t, a, "RUNNING", "")
	waitStatus(t, b, "RUNNING", "")
	var qemus int
	for _, id := range []string{a, b} {
		for _, l := range leftovers(id) {
			if strings.Contains(l, "qemu-system") {
				qemus++
			}
		}
	}
	if qemus != 2 {
		t.Fatalf("want one VM per container, found %d", qemus)
	}
}
