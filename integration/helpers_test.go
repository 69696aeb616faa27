//go:build integration

// Package integration drives the real containerd, ctr, QEMU, virtiofsd and
// guest image end to end. Run it through `make test` (hack/integration.sh),
// which starts a private containerd and sources .cache/dev/env.
package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/containerd/console"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	gruntime "github.com/earendil-works/gondolin-containerd/runtime"
)

const runtimeName = "io.containerd.gondolin.v1"

// testImage is the busybox test image.
func testImage(t *testing.T) string {
	t.Helper()
	return envImage(t, "GONDOLIN_TEST_IMAGE")
}

// distroImage is the Debian image with curl (integration/distroimage).
func distroImage(t *testing.T) string {
	t.Helper()
	return envImage(t, "GONDOLIN_DISTRO_IMAGE")
}

// envImage is the image the environment variable names (.cache/dev/env).
func envImage(t *testing.T, name string) string {
	t.Helper()
	img := os.Getenv(name)
	if img == "" {
		t.Fatalf("%s is not set: run the integration tests with `make test` or source .cache/dev/env after `make dev-up`", name)
	}
	return img
}

func namespace() string {
	if ns := os.Getenv("CONTAINERD_NAMESPACE"); ns != "" {
		return ns
	}
	return "default"
}

// newID returns a container ID unique to this test run.
func newID(t *testing.T) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	// containerd IDs must match ^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$:
	// every run of other characters in the test name becomes one "-".
	var name strings.Builder
	for _, r := range strings.ToLower(t.Name()) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			name.WriteRune(r)
		case name.Len() > 0 && !strings.HasSuffix(name.String(), "-"):
			name.WriteByte('-')
		}
	}
	id := strings.TrimSuffix(name.String(), "-")
	if len(id) > 40 {
		id = strings.TrimSuffix(id[:40], "-")
	}
	return id + "-" + hex.EncodeToString(b)
}

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %q\nstderr: %q", r.code, r.stdout, r.stderr)
}

// ctr runs the real ctr against the private containerd.
func ctr(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	return command(t, stdin, "ctr", withBootPathConfig(mergeBootPathConfig(t, args))...)
}

// bootPathConfigEnv names a runtime config that puts every `ctr run` of the
// suite on another boot path than the default one: hack/integration.sh runs
// a smoke subset of the suite with one that boots the system's QEMU (the
// default resumes VMs with the QEMU `make build` places beside the shim). A
// run without a config of its own gets it (withBootPathConfig); the config
// of a test that writes its own gets its keys where it leaves them out
// (mergeBootPathConfig).
const bootPathConfigEnv = "GONDOLIN_TEST_RUNTIME_CONFIG"

// mergeBootPathConfig: when bootPathConfigEnv is set and args (a ctr
// command line without the leading "ctr") is a `ctr run` naming a runtime
// config, the same command line naming a copy of that config with the
// top-level keys of bootPathConfigEnv's config it does not set. The test's
// own keys win: a test that names its QEMU keeps it.
func mergeBootPathConfig(t *testing.T, args []string) []string {
	t.Helper()
	path := os.Getenv(bootPathConfigEnv)
	i := slices.Index(args, "--runtime-config-path")
	if path == "" || len(args) == 0 || args[0] != "run" || i < 0 || i+1 >= len(args) {
		return args
	}
	merged, err := mergedConfig(path, args[i+1])
	if err != nil {
		t.Fatalf("%s: %v", bootPathConfigEnv, err)
	}
	out := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(out, []byte(merged), 0o644); err != nil {
		t.Fatal(err)
	}
	return slices.Concat(args[:i+1], []string{out}, args[i+2:])
}

// mergedConfig is the runtime config at own with, ahead of it, the
// top-level keys of the config at boot that own does not set. boot may hold
// only top-level keys (a boot path: qemu_path, snapshot_boot and such).
func mergedConfig(boot, own string) (string, error) {
	var bootKeys map[string]any
	if _, err := toml.DecodeFile(boot, &bootKeys); err != nil {
		return "", fmt.Errorf("boot path config %s: %w", boot, err)
	}
	ownText, err := os.ReadFile(own)
	if err != nil {
		return "", err
	}
	md, err := toml.Decode(string(ownText), &map[string]any{})
	if err != nil {
		return "", fmt.Errorf("runtime config %s: %w", own, err)
	}
	keys := slices.Sorted(maps.Keys(bootKeys))
	var b strings.Builder
	fmt.Fprintf(&b, "# %s's keys (%s), then %s\n", boot, bootPathConfigEnv, own)
	for _, k := range keys {
		if _, table := bootKeys[k].(map[string]any); table {
			return "", fmt.Errorf("boot path config %s: [%s] is a table; only top-level keys are merged into a test's config", boot, k)
		}
		if md.IsDefined(k) {
			continue
		}
		if err := toml.NewEncoder(&b).Encode(map[string]any{k: bootKeys[k]}); err != nil {
			return "", fmt.Errorf("boot path config %s: key %s: %w", boot, k, err)
		}
	}
	b.Write(ownText)
	return b.String(), nil
}

// dockerRuntimeEnv names the dockerd runtime that stands in for "gondolin"
// in `docker run` and `docker create` command lines, for the smoke run of
// another boot path (hack/integration.sh: "gondolin-test", whose runtime
// config it rewrites).
const dockerRuntimeEnv = "GONDOLIN_TEST_DOCKER_RUNTIME"

// withDockerRuntime replaces "--runtime gondolin" in a docker run or create
// command line (args without the leading "docker") by dockerRuntimeEnv's
// runtime, when that is set.
func withDockerRuntime(args []string) []string {
	rt := os.Getenv(dockerRuntimeEnv)
	if rt == "" || len(args) == 0 || (args[0] != "run" && args[0] != "create") {
		return args
	}
	out := slices.Clone(args)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == "--runtime" && out[i+1] == "gondolin" {
			out[i+1] = rt
			break
		}
	}
	return out
}

// withBootPathConfig adds --runtime-config-path from bootPathConfigEnv to a
// `ctr run` command line (args without the leading "ctr") that has none.
func withBootPathConfig(args []string) []string {
	path := os.Getenv(bootPathConfigEnv)
	if path == "" || len(args) == 0 || args[0] != "run" || slices.Contains(args, "--runtime-config-path") {
		return args
	}
	return append([]string{"run", "--runtime-config-path", path}, args[1:]...)
}

// command runs a CLI to completion (at most 5 minutes) and collects what
// it printed and its exit code.
func command(t *testing.T, stdin []byte, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return res
}

// run is `ctr run --rm --runtime gondolin IMAGE ID ARGS...` with extra ctr
// flags before the image.
func run(t *testing.T, stdin []byte, flags []string, args ...string) result {
	t.Helper()
	id := newID(t)
	full := append([]string{"run", "--rm", "--runtime", runtimeName}, flags...)
	full = append(full, testImage(t), id)
	full = append(full, args...)
	res := ctr(t, stdin, full...)
	t.Cleanup(func() { assertNoLeftovers(t, id) })
	return res
}

// startDetached runs a long-lived container of the test image and registers
// its removal.
func startDetached(t *testing.T, flags []string, args ...string) string {
	t.Helper()
	return startDetachedImage(t, testImage(t), flags, args...)
}

// startDetachedImage runs a long-lived container of image and registers its
// removal.
func startDetachedImage(t *testing.T, image string, flags []string, args ...string) string {
	t.Helper()
	id := newID(t)
	full := append([]string{"run", "-d", "--runtime", runtimeName}, flags...)
	full = append(full, image, id)
	full = append(full, args...)
	if res := ctr(t, nil, full...); res.code != 0 {
		t.Fatalf("ctr run -d: %s", res)
	}
	t.Cleanup(func() {
		if taskStatus(t, id) != "" {
			ctr(t, nil, "task", "kill", "-s", "SIGKILL", id)
			waitStatus(t, id, "STOPPED", "")
			ctr(t, nil, "task", "delete", id)
		}
		ctr(t, nil, "container", "delete", id)
		assertNoLeftovers(t, id)
	})
	return id
}

// taskStatus reads the task's status from `ctr task ls`; "" if absent.
func taskStatus(t *testing.T, id string) string {
	res := ctr(t, nil, "task", "ls")
	for _, line := range strings.Split(res.stdout, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}

func waitStatus(t *testing.T, id, want, why string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if taskStatus(t, id) == want {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	if why != "" {
		t.Fatalf("task %s did not reach %s (%s); it is %q", id, want, why, taskStatus(t, id))
	}
}

// leftovers lists what of container id still exists on the host: VMM and
// file server processes, mounts, and the state directory.
func leftovers(id string) []string {
	return leftoversIn(namespace(), id)
}

// leftoversIn lists what of container id in containerd namespace ns is
// still there: its VMM and file servers, mounts, its state directory.
func leftoversIn(ns, id string) []string {
	var found []string
	stateDir := gruntime.StateDir(gruntime.DefaultStateRoot, ns, id)
	recorded := map[int]bool{}
	for _, pid := range recordedVMPids(ns, id) {
		recorded[pid] = true
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		cmdline := string(bytes.ReplaceAll(b, []byte{0}, []byte(" ")))
		if strings.Contains(cmdline, "gondolin-"+id+",") || strings.Contains(cmdline, stateDir) || recorded[pid] {
			found = append(found, "process "+filepath.Base(filepath.Dir(p))+": "+cmdline)
		}
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(mi), "\n") {
			if strings.Contains(line, "/"+id+"/") {
				found = append(found, "mount: "+line)
			}
		}
	}
	if _, err := os.Stat(stateDir); err == nil {
		found = append(found, "state directory "+stateDir)
	}
	return append(found, orphanedPoolVMs()...)
}

// recordedVMPids are the VM processes (VMM, file servers) container id's
// state file records: a VM from the VM pool names the pool's directory on
// its command line, not the container.
func recordedVMPids(ns, id string) []int {
	b, err := os.ReadFile(filepath.Join(gruntime.StateDir(gruntime.DefaultStateRoot, ns, id), "state.json"))
	if err != nil {
		return nil
	}
	var st struct {
		VMM  int   `json:"qemu_pid"`
		Fsds []int `json:"virtiofsd_pids"`
	}
	if json.Unmarshal(b, &st) != nil {
		return nil
	}
	var pids []int
	for _, p := range append([]int{st.VMM}, st.Fsds...) {
		if p > 0 && syscall.Kill(p, 0) == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// vmmPid is container id's VMM process (0 if its state records none).
func vmmPid(t *testing.T, id string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(gruntime.StateDir(gruntime.DefaultStateRoot, namespace(), id), "state.json"))
	if err != nil {
		t.Fatalf("state of %s: %v", id, err)
	}
	var st struct {
		VMM int `json:"qemu_pid"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st.VMM
}

// poolVMDir finds a VM pool's VM directory in a command line.
var poolVMDir = regexp.MustCompile(regexp.QuoteMeta(gruntime.DefaultStateRoot) + `/vm-pool/[0-9a-f]+/vm-[0-9]+`)

// orphanedPoolVMs lists the processes of VMs a pool handed over (their
// directory has left the pool) that no container's state records: a
// container taken from the pool names its VM only in its state file, not
// in the VM's command line.
func orphanedPoolVMs() []string {
	recorded := map[int]bool{}
	states, _ := filepath.Glob(filepath.Join(gruntime.DefaultStateRoot, "*", "state.json"))
	for _, f := range states {
		var st struct {
			VMM  int   `json:"qemu_pid"`
			Fsds []int `json:"virtiofsd_pids"`
		}
		if b, err := os.ReadFile(f); err == nil && json.Unmarshal(b, &st) == nil {
			recorded[st.VMM] = true
			for _, p := range st.Fsds {
				recorded[p] = true
			}
		}
	}
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		dir := poolVMDir.Find(b)
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if dir == nil || recorded[pid] {
			continue
		}
		if _, err := os.Stat(string(dir)); err == nil {
			continue // still the pool's
		}
		found = append(found, "orphaned pool VM process "+strconv.Itoa(pid)+": "+string(bytes.ReplaceAll(b, []byte{0}, []byte(" "))))
	}
	return found
}

func assertNoLeftovers(t *testing.T, id string) {
	t.Helper()
	assertNoLeftoversIn(t, namespace(), id)
}

func assertNoLeftoversIn(t *testing.T, ns, id string) {
	t.Helper()
	var left []string
	// The shim tears the VM down asynchronously after ctr returns; give it
	// a moment before calling anything a leftover.
	for i := 0; i < 50; i++ {
		if left = leftoversIn(ns, id); len(left) == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("container %s left behind:\n%s", id, strings.Join(left, "\n"))
}

func hostKernel(t *testing.T) string {
	out, err := exec.Command("uname", "-r").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// The second pass's config reaches every `ctr run` without its own and
// nothing else.
func TestWithBootPathConfig(t *testing.T) {
	t.Setenv(bootPathConfigEnv, "/c.toml")
	for _, tc := range []struct{ in, want []string }{
		{[]string{"run", "--rm", "img", "id"}, []string{"run", "--runtime-config-path", "/c.toml", "--rm", "img", "id"}},
		{[]string{"run", "--runtime-config-path", "/own.toml", "img", "id"}, []string{"run", "--runtime-config-path", "/own.toml", "img", "id"}},
		{[]string{"task", "exec", "id", "run"}, []string{"task", "exec", "id", "run"}},
	} {
		if got := withBootPathConfig(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("withBootPathConfig(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	t.Setenv(bootPathConfigEnv, "")
	if got := withBootPathConfig([]string{"run", "img"}); !slices.Equal(got, []string{"run", "img"}) {
		t.Errorf("without %s: %q", bootPathConfigEnv, got)
	}
}

// A test's own runtime config gets the boot path's keys it leaves out, and
// keeps its own; other command lines are left as they are.
func TestMergeBootPathConfig(t *testing.T) {
	dir := t.TempDir()
	boot, own := filepath.Join(dir, "boot.toml"), filepath.Join(dir, "own.toml")
	write := func(p, text string) {
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(boot, "qemu_path = \"/usr/bin/qemu-system-x86_64\"\nsnapshot_boot = false\n")
	write(own, "snapshot_boot = true\n[upstream_hosts]\n\"a.test\" = [\"127.0.0.1\"]\n")
	t.Setenv(bootPathConfigEnv, boot)

	args := mergeBootPathConfig(t, []string{"run", "--rm", "--runtime-config-path", own, "img", "id"})
	if len(args) != 6 || args[3] == own || !slices.Equal(args[:3], []string{"run", "--rm", "--runtime-config-path"}) || !slices.Equal(args[4:], []string{"img", "id"}) {
		t.Fatalf("merged command line %q", args)
	}
	var got struct {
		QEMUPath      string              `toml:"qemu_path"`
		SnapshotBoot  bool                `toml:"snapshot_boot"`
		UpstreamHosts map[string][]string `toml:"upstream_hosts"`
	}
	if _, err := toml.DecodeFile(args[3], &got); err != nil {
		t.Fatalf("merged config: %v", err)
	}
	if got.QEMUPath != "/usr/bin/qemu-system-x86_64" || !got.SnapshotBoot || len(got.UpstreamHosts["a.test"]) != 1 {
		t.Errorf("merged config %+v: want the boot path's qemu_path, the test's snapshot_boot and tables", got)
	}

	for _, in := range [][]string{{"run", "--rm", "img", "id"}, {"task", "exec", "--runtime-config-path", own}} {
		if out := mergeBootPathConfig(t, in); !slices.Equal(out, in) {
			t.Errorf("mergeBootPathConfig(%q) = %q, want it unchanged", in, out)
		}
	}
	write(boot, "[limits]\ntcp_flows = 1\n")
	if _, err := mergedConfig(boot, own); err == nil || !strings.Contains(err.Error(), "only top-level keys") {
		t.Errorf("a table in the boot path config: %v", err)
	}
}

func TestWithDockerRuntime(t *testing.T) {
	t.Setenv(dockerRuntimeEnv, "gondolin-test")
	for _, tc := range []struct{ in, want []string }{
		{[]string{"run", "--rm", "--runtime", "gondolin", "img"}, []string{"run", "--rm", "--runtime", "gondolin-test", "img"}},
		{[]string{"run", "--rm", "--runtime", "runc", "img"}, []string{"run", "--rm", "--runtime", "runc", "img"}},
		{[]string{"inspect", "--runtime", "gondolin"}, []string{"inspect", "--runtime", "gondolin"}},
	} {
		if got := withDockerRuntime(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("withDockerRuntime(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	t.Setenv(dockerRuntimeEnv, "")
	if in := []string{"run", "--runtime", "gondolin"}; !slices.Equal(withDockerRuntime(in), in) {
		t.Errorf("without %s: %q", dockerRuntimeEnv, withDockerRuntime(in))
	}
}

// loadTask returns the task of container id through containerd's client (for
// what ctr cannot do: update, exit status), and a context in the test's
// namespace. The client is closed when the test ends.
func loadTask(t *testing.T, id string) (context.Context, containerd.Task) {
	t.Helper()
	client, err := containerd.New(os.Getenv("CONTAINERD_ADDRESS"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	ctx := namespaces.WithNamespace(context.Background(), namespace())
	c, err := client.LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, task
}

// startInPty starts cmd with a new terminal of the given size as its stdin,
// stdout, stderr and controlling terminal (in a session of its own, so its
// process group is the terminal's foreground group, which the kernel sends
// SIGWINCH on a resize), and copies what the terminal shows into the
// returned buffer. The terminal is closed when the test ends.
func startInPty(t *testing.T, cmd *exec.Cmd, size console.WinSize) (console.Console, *syncBuffer) {
	t.Helper()
	pty, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pty.Close() })
	if err := pty.Resize(size); err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = cmd.Start()
	slave.Close()
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := pty.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	return pty, out
}

// syncBuffer is a bytes.Buffer safe for one writer and readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// Len is how many bytes were written.
func (s *syncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Len()
}

// pidsOf returns the PIDs of processes whose command line contains s.
func pidsOf(s string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), s) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// shimPID finds the long-running shim serving container id.
func shimPID(t *testing.T, id string) int {
	t.Helper()
	pid := findProcess(isShimOf(id))
	if pid == 0 {
		t.Fatalf("no shim process for %s", id)
	}
	return pid
}

// isShimOf matches the arguments of the long-running shim serving
// container id (not its `start` invocation).
func isShimOf(id string) func(args []string) bool {
	return func(args []string) bool {
		return filepath.Base(args[0]) == "containerd-shim-gondolin-v1" && args[len(args)-1] != "start" &&
			argValue(args, "-id") == id
	}
}

// findProcess is the first process whose arguments match says yes to (0
// for none).
func findProcess(match func(args []string) bool) int {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		if match(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	return 0
}

// argValue is the argument after flag in args ("" if flag is not there).
func argValue(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

// procStatusKiB reads the figures in kB of /proc/pid/status (VmRSS, VmHWM,
// ...), by name without the colon.
func procStatusKiB(pid int) (map[string]int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	st := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[2] == "kB" {
			st[strings.TrimSuffix(f[0], ":")], _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return st, nil
}

func TestProcStatusKiB(t *testing.T) {
	st, err := procStatusKiB(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st["VmRSS"] <= 0 || st["VmHWM"] < st["VmRSS"] {
		t.Fatalf("VmRSS %d kB, VmHWM %d kB", st["VmRSS"], st["VmHWM"])
	}
}
