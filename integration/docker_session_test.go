//go:build integration

package integration

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/console"
)

// What a Docker user does in a session, checked against gondolin (and, where
// it makes sense, against runc doing the same).

// ptyDocker is a docker CLI whose stdin, stdout and stderr are the slave of
// a real pseudo-terminal, as in an interactive shell: the CLI puts it in
// raw mode and follows its size (SIGWINCH).
type ptyDocker struct {
	t      *testing.T
	master console.Console
	cmd    *exec.Cmd
	out    *syncBuffer

	exited chan struct{}
	err    error
}

func startPTYDocker(t *testing.T, rows, cols uint16, args ...string) *ptyDocker {
	t.Helper()
	dockerHost(t)
	return startPTYCommand(t, exec.Command("docker", args...), rows, cols)
}

// startPTYCommand runs a CLI (docker, nerdctl) in a real pseudo-terminal of
// the given size, as an interactive shell would; ptyDocker's methods drive
// it, and the test's end kills it if it still runs.
func startPTYCommand(t *testing.T, cmd *exec.Cmd, rows, cols uint16) *ptyDocker {
	t.Helper()
	p := &ptyDocker{t: t, cmd: cmd, exited: make(chan struct{})}
	p.master, p.out = startInPty(t, p.cmd, console.WinSize{Height: rows, Width: cols})
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

func (p *ptyDocker) output() string { return p.out.String() }

func (p *ptyDocker) mark() int { return p.out.Len() }

func (p *ptyDocker) send(s string) {
	p.t.Helper()
	if _, err := p.master.Write([]byte(s)); err != nil {
		p.t.Fatalf("writing %q to the pty: %v", s, err)
	}
}

// expect types line (then again every few seconds) until what the
// terminal printed since then contains want.
func (p *ptyDocker) expect(line, want string, timeout time.Duration) {
	p.t.Helper()
	from := p.mark()
	deadline := time.Now().Add(timeout)
	var resent time.Time
	for {
		if strings.Contains(p.output()[from:], want) {
			return
		}
		select {
		case <-p.exited:
			p.t.Fatalf("docker exited (%v) before the terminal showed %q; it printed:\n%q", p.err, want, p.output())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("the terminal did not show %q within %s after typing %q; it printed:\n%q", want, timeout, line, p.output())
		}
		if time.Since(resent) > 3*time.Second {
			p.send(line + "\r")
			resent = time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *ptyDocker) resize(rows, cols uint16) {
	p.t.Helper()
	if err := p.master.Resize(console.WinSize{Height: rows, Width: cols}); err != nil {
		p.t.Fatal(err)
	}
}

// exit types line and returns docker's exit code.
func (p *ptyDocker) exit(line string, timeout time.Duration) int {
	p.t.Helper()
	p.send(line + "\r")
	select {
	case <-p.exited:
	case <-time.After(timeout):
		p.t.Fatalf("docker did not exit within %s after %q; the terminal printed:\n%q", timeout, line, p.output())
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	}
	p.t.Fatalf("docker: %v", p.err)
	return -1
}

// An interactive shell through a real terminal: its size at start, a resize
// while it runs, and its exit code; for docker run -it and docker exec -it.
func TestDockerInteractiveTTY(t *testing.T) {
	session := func(t *testing.T, p *ptyDocker) {
		// The shell's prompt: it reads the terminal now.
		p.expect("", "# ", 60*time.Second)
		p.expect("stty size", "30 90", 30*time.Second)
		p.resize(50, 120)
		p.expect("stty size", "50 120", 30*time.Second)
		if code := p.exit("exit 7", 30*time.Second); code != 7 {
			t.Fatalf("docker exited %d, want 7 (the shell's exit code); the terminal printed:\n%q", code, p.output())
		}
	}
	t.Run("run", func(t *testing.T) {
		name := newID(t)
		p := startPTYDocker(t, 30, 90, "run", "-it", "--rm", "--name", name, "--runtime", "gondolin", testImage(t), "sh")
		t.Cleanup(func() { docker(t, nil, "rm", "-f", name) })
		session(t, p)
	})
	t.Run("exec", func(t *testing.T) {
		id := dockerDetached(t, "gondolin", nil, "sleep", "1000")
		p := startPTYDocker(t, 30, 90, "exec", "-it", id, "sh")
		session(t, p)
	})
}

// A named volume written by a gondolin container is read back by a runc
// one, and can be removed afterwards (nothing of ours holds it).
func TestDockerNamedVolume(t *testing.T) {
	dockerHost(t)
	vol := newID(t)
	if res := docker(t, nil, "volume", "create", vol); res.code != 0 {
		t.Fatalf("volume create: %s", res)
	}
	removed := false
	t.Cleanup(func() {
		if !removed {
			docker(t, nil, "volume", "rm", "-f", vol)
		}
	})
	res := dockerRun(t, "gondolin", []string{"-v", vol + ":/data"},
		"sh", "-c", "echo from-gondolin > /data/f && mkdir /data/d && echo nested > /data/d/g && chown 1000:1000 /data/d/g && cat /data/f")
	if res.code != 0 || res.stdout != "from-gondolin\n" {
		t.Fatalf("gondolin writing the volume: %s", res)
	}
	res = dockerRun(t, "runc", []string{"-v", vol + ":/data"}, "sh", "-c", "cat /data/f /data/d/g; stat -c '%u:%g' /data/d/g")
	if res.code != 0 || res.stdout != "from-gondolin\nnested\n1000:1000\n" {
		t.Fatalf("runc reading what gondolin wrote: %s", res)
	}
	if res := docker(t, nil, "volume", "rm", vol); res.code != 0 {
		t.Fatalf("volume rm after the containers are gone: %s", res)
	}
	removed = true
	if res := docker(t, nil, "volume", "inspect", vol); res.code == 0 {
		t.Fatalf("the volume is still there after rm: %s", res)
	}
}

// A host port that is taken fails docker run -p as with runc, and the
// container is not left half-started.
func TestDockerPortTaken(t *testing.T) {
	dockerHost(t)
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	try := func(runtime string) (string, result) {
		name := newID(t) + "-" + runtime
		res := docker(t, nil, "run", "-d", "--name", name, "--runtime", runtime, "-p", port+":80", testImage(t), "sleep", "100")
		t.Cleanup(func() { docker(t, nil, "rm", "-f", name) })
		return name, res
	}
	const key = "address already in use"
	_, want := try("runc")
	if want.code == 0 || !strings.Contains(want.stderr, key) {
		t.Fatalf("runc with host port %s taken did not fail with %q (the premise of this test): %s", port, key, want)
	}
	name, got := try("gondolin")
	t.Logf("runc:     %s\ngondolin: %s", want, got)
	if got.code == 0 || !strings.Contains(got.stderr, key) || !strings.Contains(got.stderr, port) {
		t.Fatalf("with host port %s taken, gondolin should fail like runc (%q, naming the port):\nrunc:     %s\ngondolin: %s", port, key, want, got)
	}
	assertFailedRunLeavesNothing(t, name)
}

// dockerTestConfig gives the test the runtime config of the dev dockerd's
// "gondolin-test" runtime (GONDOLIN_DEV_TEST_CONFIG, hack/dev-up.sh): set
// writes it, and the test's cleanup puts the default (comments only) back.
// Each docker container gets its own shim, which reads it at create.
func dockerTestConfig(t *testing.T) (set func(text string)) {
	t.Helper()
	dockerHost(t)
	return testRuntimeConfig(t)
}

// testRuntimeConfig gives the test the runtime config of the dev
// environment's "gondolin-test" runtimes, dockerd's and CRI's
// (GONDOLIN_DEV_TEST_CONFIG, hack/dev-up.sh): set writes it, and the
// test's cleanup puts the default (comments only) back.
func testRuntimeConfig(t *testing.T) (set func(text string)) {
	t.Helper()
	cfgPath := os.Getenv("GONDOLIN_DEV_TEST_CONFIG")
	if cfgPath == "" {
		t.Fatal("GONDOLIN_DEV_TEST_CONFIG is not set: run hack/dev-up.sh (it registers the gondolin-test runtime with dockerd and CRI) and source .cache/dev/env")
	}
	orig, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(orig), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			t.Logf("%s does not hold its default (comments only) but %q, probably left by an interrupted run: putting a comment back", cfgPath, orig)
			orig = []byte("# Written by hack/dev-up.sh: the \"gondolin-test\" docker runtime (restored by the tests that change it).\n")
			break
		}
	}
	write := func(b []byte) {
		if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
			t.Fatalf("writing %s: %v", cfgPath, err)
		}
	}
	write(orig)
	t.Cleanup(func() { write(orig) })
	return func(text string) { write([]byte(text)) }
}

// A VM that cannot boot (its kernel is not a kernel) fails docker run with
// a message naming the cause, and leaves nothing behind. The dev dockerd's
// "gondolin-test" runtime names the runtime config GONDOLIN_DEV_TEST_CONFIG
// (hack/dev-up.sh), which this test rewrites and puts back; each container
// gets its own shim, which reads it at create.
func TestDockerVMCannotBoot(t *testing.T) {
	setConfig := dockerTestConfig(t)
	boots := func(when string) {
		t.Helper()
		if res := dockerRun(t, "gondolin-test", nil, "echo", "booted"); res.code != 0 || res.stdout != "booted\n" {
			t.Fatalf("the gondolin-test runtime with its default config (%s): %s", when, res)
		}
	}
	boots("before")

	bad := filepath.Join(t.TempDir(), "not-a-kernel")
	if err := os.WriteFile(bad, []byte(strings.Repeat("this is not a kernel\n", 4096)), 0o644); err != nil {
		t.Fatal(err)
	}
	setConfig(fmt.Sprintf("kernel_path = %q\nboot_timeout = \"30s\"\n", bad))
	name := newID(t)
	t.Cleanup(func() { docker(t, nil, "rm", "-f", name) })
	start := time.Now()
	res := docker(t, nil, "run", "--name", name, "--runtime", "gondolin-test", testImage(t), "echo", "booted")
	t.Logf("docker run with a kernel that is not one: after %s: %s", time.Since(start).Round(time.Millisecond), res)
	lower := strings.ToLower(res.stderr)
	named := strings.Contains(res.stderr, bad) || (strings.Contains(lower, "qemu") && strings.Contains(lower, "kernel"))
	if res.code == 0 || !named {
		t.Errorf("want docker run to fail naming the cause (the kernel %s, or QEMU's error about it): %s", bad, res)
	}
	assertFailedRunLeavesNothing(t, name)

	// The next container reads the config again.
	setConfig("# the built-in defaults again\n")
	boots("after restoring it")
}

var iptablesCounters = regexp.MustCompile(`\[\d+:\d+\]`)

// iptablesLines is iptables-save of the filter and nat tables as a set of
// lines, without comments and counters.
func iptablesLines(t *testing.T) map[string]bool {
	t.Helper()
	lines := map[string]bool{}
	for _, table := range []string{"filter", "nat"} {
		res := command(t, nil, "iptables-save", "-t", table)
		if res.code != 0 {
			t.Fatalf("iptables-save -t %s: %s", table, res)
		}
		for _, l := range strings.Split(res.stdout, "\n") {
			if l = strings.TrimSpace(l); l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			lines[table+": "+iptablesCounters.ReplaceAllString(l, "")] = true
		}
	}
	return lines
}

// A container on a user-defined network publishing a port, then stop and
// docker system prune: no process, mount, state, iptables rule, bridge or
// network namespace of it is left. The prune is limited to this test's
// label: the dev dockerd is shared.
func TestDockerPruneLeavesNothing(t *testing.T) {
	dockerHost(t)
	before := iptablesLines(t)
	label := "gondolin.test=" + newID(t)
	netName := newID(t)
	if res := docker(t, nil, "network", "create", "--label", label, netName); res.code != 0 {
		t.Fatalf("network create: %s", res)
	}
	t.Cleanup(func() { docker(t, nil, "network", "rm", netName) })
	netID := strings.TrimSpace(docker(t, nil, "network", "inspect", "-f", "{{.Id}}", netName).stdout)
	bridge := strings.TrimSpace(docker(t, nil, "network", "inspect", "-f", `{{index .Options "com.docker.network.bridge.name"}}`, netName).stdout)
	if bridge == "" && len(netID) >= 12 {
		bridge = "br-" + netID[:12]
	}
	if bridge == "" {
		t.Fatalf("no bridge name for network %s", netName)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	name := newID(t)
	res := docker(t, nil, "run", "-d", "--name", name, "--label", label, "--network", netName, "--runtime", "gondolin", "-p", port+":80",
		testImage(t), "sh", "-c", "mkdir -p /www && echo pruned > /www/index.html && exec httpd -f -p 80 -h /www")
	t.Cleanup(func() { docker(t, nil, "rm", "-f", name) })
	if res.code != 0 {
		t.Fatalf("docker run -d: %s", res)
	}
	id := strings.TrimSpace(res.stdout)
	if body := waitHTTP(t, "http://127.0.0.1:"+port+"/index.html", 90*time.Second); strings.TrimSpace(body) != "pruned" {
		t.Fatalf("published port: %q", body)
	}
	ip := strings.TrimSpace(docker(t, nil, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", id).stdout)
	sandboxKey := strings.TrimSpace(docker(t, nil, "inspect", "-f", "{{.NetworkSettings.SandboxKey}}", id).stdout)
	if ip == "" || sandboxKey == "" {
		t.Fatalf("container %s has address %q and network namespace %q", id, ip, sandboxKey)
	}
	if _, err := os.Stat(sandboxKey); err != nil {
		t.Fatalf("the container's network namespace: %v", err)
	}
	ipRe := regexp.MustCompile(`(^|[^0-9.])` + regexp.QuoteMeta(ip) + `($|[^0-9])`)
	portRe := regexp.MustCompile(`--dport ` + port + `($|[^0-9])`)
	ours := func(line string) bool {
		return ipRe.MatchString(line) || portRe.MatchString(line) || strings.Contains(line, bridge)
	}
	// While it runs, the rules are there (so their absence later means
	// something).
	var during []string
	for l := range iptablesLines(t) {
		if ours(l) {
			during = append(during, l)
		}
	}
	if !strings.Contains(strings.Join(during, "\n"), bridge) || !portRe.MatchString(strings.Join(during, "\n")) {
		t.Fatalf("while the container runs, iptables has no rule naming its bridge %s and its port %s:\n%s", bridge, port, strings.Join(during, "\n"))
	}

	if res := docker(t, nil, "stop", "-t", "1", name); res.code != 0 {
		t.Fatalf("stop: %s", res)
	}
	res = docker(t, nil, "system", "prune", "-f", "--filter", "label="+label)
	if res.code != 0 || !strings.Contains(res.stdout, id) || !strings.Contains(res.stdout, netName) {
		t.Fatalf("docker system prune should delete the container %s and the network %s: %s", id, netName, res)
	}
	if res := docker(t, nil, "inspect", id); res.code == 0 {
		t.Fatalf("the container survived the prune: %s", res)
	}
	if res := docker(t, nil, "network", "inspect", netName); res.code == 0 {
		t.Fatalf("the network survived the prune: %s", res)
	}

	assertNoLeftoversIn(t, dockerNamespace, id)
	var left []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		left = nil
		after := iptablesLines(t)
		for l := range after {
			if ours(l) {
				left = append(left, "iptables rule: "+l)
			}
		}
		if _, err := os.Stat(sandboxKey); err == nil {
			left = append(left, "network namespace "+sandboxKey)
		}
		if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
			for _, line := range strings.Split(string(mi), "\n") {
				if strings.Contains(line, filepath.Base(sandboxKey)) {
					left = append(left, "mount: "+line)
				}
			}
		}
		if res := command(t, nil, "ip", "netns", "list"); strings.Contains(res.stdout, filepath.Base(sandboxKey)) || strings.Contains(res.stdout, id[:12]) {
			left = append(left, "ip netns: "+res.stdout)
		}
		if res := command(t, nil, "ip", "link", "show", bridge); res.code == 0 {
			left = append(left, "bridge: "+res.stdout)
		}
		if len(left) == 0 {
			var added, removed []string
			for l := range after {
				if !before[l] {
					added = append(added, l)
				}
			}
			for l := range before {
				if !after[l] {
					removed = append(removed, l)
				}
			}
			if len(added)+len(removed) > 0 {
				// Other users of the shared dockerd may have changed
				// rules meanwhile; none of these is ours.
				t.Logf("iptables changed meanwhile (none naming %s, %s or port %s):\nadded:\n%s\nremoved:\n%s",
					ip, bridge, port, strings.Join(added, "\n"), strings.Join(removed, "\n"))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after stop and docker system prune, left behind:\n%s", strings.Join(left, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// sessionStep is one command of a replayed session and what the user saw.
type sessionStep struct {
	args  []string
	stdin string
}

var (
	agoRe    = regexp.MustCompile(`^(Exited \(-?\d+\)|Created|Up)(?: .*?)?( \(Paused\))?$`)
	statusRe = regexp.MustCompile(`\{\{\.Status\}\}`)
)

// dockerSession replays a Docker user's session against runtime and returns
// what they saw, container IDs and names replaced by placeholders.
func dockerSession(t *testing.T, runtime string) []string {
	t.Helper()
	name := newID(t) + "-" + runtime
	var id string
	var transcript []string
	dir := t.TempDir()
	norm := func(s string) string {
		s = strings.ReplaceAll(s, dir, "<DIR>")
		if id != "" {
			s = strings.ReplaceAll(s, id, "<ID>")
			s = strings.ReplaceAll(s, id[:12], "<SHORT-ID>")
		}
		return strings.ReplaceAll(s, name, "<NAME>")
	}
	do := func(step sessionStep) result {
		t.Helper()
		var stdin []byte
		if step.stdin != "" {
			stdin = []byte(step.stdin)
		}
		res := docker(t, stdin, step.args...)
		args := norm(strings.Join(step.args, " "))
		stdout := norm(res.stdout)
		if strings.Contains(args, "--format") && statusRe.MatchString(args) {
			// ps --format {{.Status}}: keep the state, drop its age.
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
				lines = append(lines, agoRe.ReplaceAllString(l, "$1$2"))
			}
			stdout = strings.Join(lines, "\n")
		}
		stderr := norm(res.stderr)
		transcript = append(transcript, fmt.Sprintf("$ docker %s\n  exit %d\n  stdout %q\n  stderr %q", args, res.code, stdout, stderr))
		return res
	}
	waitLogs := func(want string, n int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			res := docker(t, nil, "logs", name)
			if strings.Count(res.stdout, want) >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: docker logs never showed %q %d times: %s", runtime, want, n, res)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Cleanup(func() { docker(t, nil, "rm", "-f", name) })

	res := docker(t, nil, "run", "-d", "--name", name, "--runtime", runtime, "-e", "FOO=bar", testImage(t),
		"sh", "-c", "trap 'echo got-usr1' USR1; echo started; echo to-stderr >&2; while true; do sleep 1; done")
	if res.code != 0 {
		t.Fatalf("%s: docker run -d: %s", runtime, res)
	}
	id = strings.TrimSpace(res.stdout)
	if len(id) != 64 {
		t.Fatalf("%s: docker run -d printed %q", runtime, res.stdout)
	}
	transcript = append(transcript, fmt.Sprintf("$ docker run -d --name <NAME> -e FOO=bar IMAGE sh -c ...\n  exit 0\n  stdout %q", norm(res.stdout)))
	waitLogs("started", 1)
	do(sessionStep{args: []string{"logs", name}})
	do(sessionStep{args: []string{"exec", name, "sh", "-c", "echo hi; echo oops >&2; exit 3"}})
	do(sessionStep{args: []string{"exec", "-e", "X=1", "-w", "/tmp", "-u", "1000:1000", name, "sh", "-c", `echo "$X $FOO"; pwd; id`}})
	do(sessionStep{args: []string{"exec", name, "sh", "-c", `echo "$HOSTNAME"; hostname; cat /etc/hostname; id`}})
	do(sessionStep{args: []string{"exec", "-i", name, "sh", "-c", "cat; echo end"}, stdin: "line1\nline2\n"})
	do(sessionStep{args: []string{"exec", name, "sh", "-c", "kill -TERM $$"}})
	// The whole message, worded as runc's shim words it.
	do(sessionStep{args: []string{"exec", name, "no-such-command"}})
	inspect := []string{"inspect", "-f", "{{.State.Status}} running={{.State.Running}} paused={{.State.Paused}} exit={{.State.ExitCode}} oom={{.State.OOMKilled}} host={{.Config.Hostname}} restarts={{.RestartCount}} cmd={{json .Config.Cmd}} env={{json .Config.Env}}", name}
	ps := []string{"ps", "-a", "--filter", "name=^" + name + "$", "--format", "{{.Status}}"}
	do(sessionStep{args: inspect})
	do(sessionStep{args: ps})
	do(sessionStep{args: []string{"exec", name, "sh", "-c", "echo made-inside > /tmp/out.txt"}})
	do(sessionStep{args: []string{"cp", name + ":/tmp/out.txt", dir + "/running.txt"}})
	b, err := os.ReadFile(dir + "/running.txt")
	transcript = append(transcript, fmt.Sprintf("copied out while running: %q %v", b, err))
	do(sessionStep{args: []string{"diff", name}})
	do(sessionStep{args: []string{"pause", name}})
	do(sessionStep{args: inspect})
	do(sessionStep{args: ps})
	do(sessionStep{args: []string{"unpause", name}})
	do(sessionStep{args: []string{"kill", "-s", "USR1", name}})
	waitLogs("got-usr1", 1)
	do(sessionStep{args: []string{"logs", name}})
	// sh is the container's PID 1: SIGTERM (no handler) does not end it,
	// so stop ends with SIGKILL after the timeout.
	do(sessionStep{args: []string{"stop", "-t", "1", name}})
	do(sessionStep{args: []string{"wait", name}})
	do(sessionStep{args: inspect})
	do(sessionStep{args: ps})
	do(sessionStep{args: []string{"cp", name + ":/tmp/out.txt", dir + "/stopped.txt"}})
	b, err = os.ReadFile(dir + "/stopped.txt")
	transcript = append(transcript, fmt.Sprintf("copied out after stop: %q %v", b, err))
	do(sessionStep{args: []string{"exec", name, "true"}})
	do(sessionStep{args: []string{"start", name}})
	waitLogs("started", 2)
	do(sessionStep{args: []string{"exec", name, "cat", "/tmp/out.txt"}})
	do(sessionStep{args: []string{"kill", name}})
	do(sessionStep{args: []string{"wait", name}})
	do(sessionStep{args: []string{"logs", name}})
	do(sessionStep{args: inspect})
	do(sessionStep{args: []string{"rm", name}})
	do(sessionStep{args: []string{"inspect", name}})
	assertNoLeftoversIn(t, dockerNamespace, id)
	return transcript
}

// A Docker user's session (run -d, exec, logs, inspect, ps, cp, diff,
// pause, kill -s, stop, wait, start, rm) sees the same with gondolin as with
// runc.
func TestDockerSessionLikeRunc(t *testing.T) {
	dockerHost(t)
	want := dockerSession(t, "runc")
	got := dockerSession(t, "gondolin")
	if strings.Join(want, "\n") == strings.Join(got, "\n") {
		if testing.Verbose() {
			t.Logf("both runtimes:\n%s", strings.Join(got, "\n"))
		}
		return
	}
	var diff strings.Builder
	for i := 0; i < len(want) || i < len(got); i++ {
		var w, g string
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w == g {
			fmt.Fprintf(&diff, "  %s\n", firstLine(w))
			continue
		}
		for _, l := range lines(w) {
			fmt.Fprintf(&diff, "- %s\n", l)
		}
		for _, l := range lines(g) {
			fmt.Fprintf(&diff, "+ %s\n", l)
		}
	}
	t.Fatalf("the session differs (- runc, + gondolin):\n%s", diff.String())
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
