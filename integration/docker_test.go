//go:build integration

package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The Docker tests drive the real dockerd that `make dev-up` starts on the
// private containerd, with gondolin registered as the runtime "gondolin".

func dockerHost(t *testing.T) {
	t.Helper()
	if os.Getenv("DOCKER_HOST") == "" {
		t.Fatal("DOCKER_HOST is not set: run the integration tests with `make test` or source .cache/dev/env after `make dev-up`")
	}
}

// docker runs the docker CLI (with the runtime dockerRuntimeEnv names for
// "gondolin", when it is set).
func docker(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	dockerHost(t)
	return command(t, stdin, "docker", withDockerRuntime(args)...)
}

// dockerRun is `docker run --rm --runtime RUNTIME FLAGS IMAGE ARGS`.
func dockerRun(t *testing.T, runtime string, flags []string, args ...string) result {
	t.Helper()
	full := append([]string{"run", "--rm", "--runtime", runtime}, flags...)
	full = append(full, testImage(t))
	return docker(t, nil, append(full, args...)...)
}

// dockerDetached starts a container and removes it at the end of the test.
func dockerDetached(t *testing.T, runtime string, flags []string, args ...string) string {
	t.Helper()
	full := append([]string{"run", "-d", "--runtime", runtime}, flags...)
	full = append(full, testImage(t))
	res := docker(t, nil, append(full, args...)...)
	if res.code != 0 {
		t.Fatalf("docker run -d: %s", res)
	}
	id := strings.TrimSpace(res.stdout)
	t.Cleanup(func() {
		if res := docker(t, nil, "rm", "-f", id); res.code != 0 {
			t.Errorf("docker rm -f %s: %s", id, res)
		}
	})
	return id
}

// Foreground runs, exit codes, output and stdin behave as with runc.
func TestDockerRunLikeRunc(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
		args  []string
		stdin []byte
	}{
		{"exit code and output", nil, []string{"sh", "-c", "echo out; echo err >&2; exit 5"}, nil},
		{"env workdir user", []string{"-e", "A=b c", "-w", "/tmp", "-u", "1000:1000"}, []string{"sh", "-c", "echo \"$A\"; pwd; id"}, nil},
		{"hostname", []string{"--hostname", "dock-host"}, []string{"hostname"}, nil},
		{"read-only", []string{"--read-only"}, []string{"sh", "-c", "touch /x 2>/dev/null; echo $?"}, nil},
		{"tmpfs", []string{"--tmpfs", "/scratch"}, []string{"sh", "-c", "echo hi > /scratch/f && cat /scratch/f && awk '$2 == \"/scratch\" {print $3}' /proc/mounts"}, nil},
		{"add-host", []string{"--add-host", "db.internal:10.9.8.7"}, []string{"sh", "-c", "grep db.internal /etc/hosts | awk '{print $1}'"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := dockerRun(t, "runc", tc.flags, tc.args...)
			got := dockerRun(t, "gondolin", tc.flags, tc.args...)
			if got.code != want.code || got.stdout != want.stdout || got.stderr != want.stderr {
				t.Fatalf("differs from runc:\nrunc:     %s\ngondolin: %s", want, got)
			}
		})
	}
}

// -i with piped stdin reaches EOF.
func TestDockerStdin(t *testing.T) {
	dockerHost(t)
	res := docker(t, []byte("one\ntwo\n"), "run", "--rm", "-i", "--runtime", "gondolin", testImage(t), "sh", "-c", "cat; echo done")
	if res.code != 0 || res.stdout != "one\ntwo\ndone\n" {
		t.Fatalf("%s", res)
	}
}

// A published port answers on the host, and another container reaches the
// server on the bridge.
func TestDockerPublishedPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	start := time.Now()
	id := dockerDetached(t, "gondolin", []string{"-p", fmt.Sprintf("%d:80", hostPort)},
		"sh", "-c", "mkdir -p /www && echo published > /www/index.html && exec httpd -f -p 80 -h /www")
	url := fmt.Sprintf("http://127.0.0.1:%d/index.html", hostPort)
	body := waitHTTP(t, url, 90*time.Second)
	t.Logf("published port answered %s after docker run -d started", time.Since(start).Round(time.Millisecond))
	if strings.TrimSpace(body) != "published" {
		t.Fatalf("published port: %q", body)
	}
	ip := strings.TrimSpace(docker(t, nil, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", id).stdout)
	if ip == "" {
		t.Fatal("no bridge address for the container")
	}
	// The guest has the address Docker gave its namespace.
	if res := docker(t, nil, "exec", id, "sh", "-c", "ip -4 addr show eth0 2>/dev/null || cat /proc/net/fib_trie"); !strings.Contains(res.stdout, ip) {
		t.Errorf("the guest does not have its Docker address %s: %s", ip, res)
	}
	res := dockerRun(t, "runc", nil, "wget", "-qO-", "http://"+ip+"/index.html")
	if res.code != 0 || strings.TrimSpace(res.stdout) != "published" {
		t.Fatalf("a runc container on the bridge cannot reach the gondolin one at %s: %s", ip, res)
	}
}

func waitHTTP(t *testing.T, url string, timeout time.Duration) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b)
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s did not answer within %s: %v", url, timeout, lastErr)
	return ""
}

// waitLogs waits up to within for the container's docker logs to show want;
// why is the failure.
func waitLogs(t *testing.T, id, want string, within time.Duration, why string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(docker(t, nil, "logs", id).stdout, want) {
		if time.Now().After(deadline) {
			t.Fatal(why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// exec, logs, stop (SIGTERM then SIGKILL), wait and inspect.
func TestDockerLifecycle(t *testing.T) {
	id := dockerDetached(t, "gondolin", nil, "sh", "-c", "trap '' TERM; echo started; sleep 1000")
	if res := docker(t, nil, "exec", id, "sh", "-c", "echo from-exec; exit 3"); res.code != 3 || res.stdout != "from-exec\n" {
		t.Fatalf("docker exec: %s", res)
	}
	waitLogs(t, id, "started", 30*time.Second, "docker logs never showed the output")
	if rt := strings.TrimSpace(docker(t, nil, "inspect", "-f", "{{.HostConfig.Runtime}}", id).stdout); rt != "gondolin" {
		t.Fatalf("inspect shows runtime %q", rt)
	}
	start := time.Now()
	if res := docker(t, nil, "stop", "-t", "2", id); res.code != 0 {
		t.Fatalf("docker stop: %s", res)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Fatalf("a process ignoring SIGTERM stopped after %s, before the timeout", d)
	}
	if res := docker(t, nil, "wait", id); strings.TrimSpace(res.stdout) != "137" {
		t.Fatalf("docker wait after SIGKILL: %s", res)
	}
}

// --network none leaves the guest without a NIC.
func TestDockerNetworkNone(t *testing.T) {
	script := `for d in /sys/class/net/*; do [ "$(cat $d/type)" = 1 ] && echo "${d##*/}"; done; true`
	res := dockerRun(t, "gondolin", []string{"--network", "none"}, "sh", "-c", script)
	if res.code != 0 || strings.TrimSpace(res.stdout) != "" {
		t.Fatalf("--network none: %s", res)
	}
}

// A bad gondolin annotation fails docker run clearly, and nothing is left.
func TestDockerBadAnnotation(t *testing.T) {
	res := dockerRun(t, "gondolin", []string{"--annotation", "io.gondolin.net.mode=wide"}, "true")
	if res.code == 0 || !strings.Contains(res.stderr, "io.gondolin.net.mode") {
		t.Fatalf("want a clear error: %s", res)
	}
}

// --annotation io.gondolin.* reaches the runtime through Docker: a secret
// is only a placeholder inside the VM, and net.mode=none takes the NIC
// away even on Docker's bridge.
func TestDockerAnnotations(t *testing.T) {
	res := dockerRun(t, "gondolin", []string{"-e", "TOKEN=s3cr3t-docker-value", "--annotation", "io.gondolin.secret.TOKEN=api.example.test"},
		"sh", "-c", `echo "$TOKEN"; tr '\0' '\n' < /proc/1/environ | grep TOKEN`)
	if res.code != 0 || strings.Contains(res.stdout, "s3cr3t") || strings.Count(res.stdout, "GONDOLIN_SECRET_") != 2 {
		t.Fatalf("the secret's value reached the VM, or no placeholder: %s", res)
	}
	script := `for d in /sys/class/net/*; do [ "$(cat $d/type)" = 1 ] && echo "${d##*/}"; done; true`
	if res := dockerRun(t, "gondolin", []string{"--annotation", "io.gondolin.net.mode=none"}, "sh", "-c", script); res.code != 0 || strings.TrimSpace(res.stdout) != "" {
		t.Fatalf("net.mode=none on the bridge should leave no NIC: %s", res)
	}
	if res := dockerRun(t, "gondolin", nil, "sh", "-c", script); res.code != 0 || len(strings.Fields(res.stdout)) != 1 {
		t.Fatalf("the bridge gives the guest one NIC: %s", res)
	}
}

// pause/unpause, stats, kill -s, restart and cp on a running container.
func TestDockerManage(t *testing.T) {
	id := dockerDetached(t, "gondolin", nil, "sh", "-c", "trap 'echo got-usr1' USR1; while true; do sleep 1; done")
	if res := docker(t, nil, "pause", id); res.code != 0 {
		t.Fatalf("pause: %s", res)
	}
	if st := strings.TrimSpace(docker(t, nil, "inspect", "-f", "{{.State.Status}}", id).stdout); st != "paused" {
		t.Fatalf("after pause: %s", st)
	}
	if res := docker(t, nil, "unpause", id); res.code != 0 {
		t.Fatalf("unpause: %s", res)
	}
	res := docker(t, nil, "stats", "--no-stream", "--format", "{{.MemUsage}} {{.CPUPerc}}", id)
	if res.code != 0 || strings.HasPrefix(strings.TrimSpace(res.stdout), "0B") {
		t.Fatalf("stats: %s", res)
	}
	// docker top is a documented limit (docs/limits.md): dockerd filters
	// the host's ps by the guest's PIDs.
	if res := docker(t, nil, "kill", "-s", "USR1", id); res.code != 0 {
		t.Fatalf("kill -s USR1: %s", res)
	}
	waitLogs(t, id, "got-usr1", 20*time.Second, "the signal did not reach the container's process")
	dir := t.TempDir()
	src := dir + "/in.txt"
	if err := os.WriteFile(src, []byte("copied in\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if res := docker(t, nil, "cp", src, id+":/tmp/in.txt"); res.code != 0 {
		t.Fatalf("cp in: %s", res)
	}
	if res := docker(t, nil, "exec", id, "cat", "/tmp/in.txt"); res.stdout != "copied in\n" {
		t.Fatalf("file copied in, seen from the guest: %s", res)
	}
	if res := docker(t, nil, "exec", id, "sh", "-c", "echo made inside > /tmp/out.txt"); res.code != 0 {
		t.Fatalf("%s", res)
	}
	if res := docker(t, nil, "cp", id+":/tmp/out.txt", dir+"/out.txt"); res.code != 0 {
		t.Fatalf("cp out: %s", res)
	}
	if b, _ := os.ReadFile(dir + "/out.txt"); string(b) != "made inside\n" {
		t.Fatalf("file copied out: %q", b)
	}
	if res := docker(t, nil, "restart", "-t", "1", id); res.code != 0 {
		t.Fatalf("restart: %s", res)
	}
	if st := strings.TrimSpace(docker(t, nil, "inspect", "-f", "{{.State.Status}}", id).stdout); st != "running" {
		t.Fatalf("after restart: %s", st)
	}
}

// -v host:ctr[:ro] binds, with writes landing on the host.
func TestDockerBindVolume(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/host.txt", []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := dockerRun(t, "gondolin", []string{"-v", dir + ":/data", "-v", dir + ":/ro:ro"},
		"sh", "-c", "cat /data/host.txt; echo from guest > /data/guest.txt; touch /ro/x 2>/dev/null && echo ro-writable || echo ro-refused")
	if res.code != 0 || res.stdout != "from host\nro-refused\n" {
		t.Fatalf("%s", res)
	}
	if b, _ := os.ReadFile(dir + "/guest.txt"); string(b) != "from guest\n" {
		t.Fatalf("write through the bind: %q", b)
	}
}

// assertFailedRunLeavesNothing checks what a docker run that failed left
// of container name: it is exited or created (never stuck), and after
// docker rm -f nothing of it remains.
func assertFailedRunLeavesNothing(t *testing.T, name string) {
	t.Helper()
	st := strings.TrimSpace(docker(t, nil, "inspect", "-f", "{{.State.Status}}", name).stdout)
	if st != "exited" && st != "created" {
		t.Fatalf("after a failed start the container is %q", st)
	}
	id := strings.TrimSpace(docker(t, nil, "inspect", "-f", "{{.Id}}", name).stdout)
	if id == "" {
		t.Fatal("no container ID")
	}
	if res := docker(t, nil, "rm", "-f", name); res.code != 0 {
		t.Fatalf("rm -f: %s", res)
	}
	assertNoLeftoversIn(t, dockerNamespace, id)
}

// dockerNamespace is the containerd namespace dockerd uses.
const dockerNamespace = "moby"

// An entrypoint that does not exist fails docker run with its name, the
// container ends up exited or created (never stuck), and rm leaves nothing.
func TestDockerErrors(t *testing.T) {
	dockerHost(t)
	name := newID(t)
	res := docker(t, nil, "run", "--name", name, "--runtime", "gondolin", testImage(t), "/no/such-binary")
	if res.code == 0 || !strings.Contains(res.stderr, "such-binary") {
		t.Fatalf("want a clear error naming the missing entrypoint: %s", res)
	}
	assertFailedRunLeavesNothing(t, name)
}

// docker rm -f on a running container removes its VM and everything of it.
func TestDockerRmForce(t *testing.T) {
	dockerHost(t)
	res := docker(t, nil, "run", "-d", "--runtime", "gondolin", "-p", "0:80", testImage(t), "sleep", "1000")
	if res.code != 0 {
		t.Fatalf("%s", res)
	}
	id := strings.TrimSpace(res.stdout)
	if res := docker(t, nil, "rm", "-f", id); res.code != 0 {
		t.Fatalf("rm -f: %s", res)
	}
	assertNoLeftoversIn(t, dockerNamespace, id)
}

// --restart on-failure restarts a failing container; events tell its story.
func TestDockerRestartPolicyAndEvents(t *testing.T) {
	dockerHost(t)
	since := time.Now().Add(-time.Second).Format(time.RFC3339Nano)
	id := dockerDetached(t, "gondolin", []string{"--restart", "on-failure:2"}, "sh", "-c", "sleep 1; exit 3")
	deadline := time.Now().Add(90 * time.Second)
	for {
		n := strings.TrimSpace(docker(t, nil, "inspect", "-f", "{{.RestartCount}}", id).stdout)
		if n == "2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restart count stayed at %q", n)
		}
		time.Sleep(500 * time.Millisecond)
	}
	res := docker(t, nil, "events", "--since", since, "--until", time.Now().Format(time.RFC3339Nano),
		"--filter", "container="+id, "--format", "{{.Action}}")
	for _, want := range []string{"create", "start", "die"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("docker events lack %q: %s", want, res)
		}
	}
}

// docker run -t gives the process a terminal.
func TestDockerTTY(t *testing.T) {
	res := dockerRun(t, "gondolin", []string{"-t"}, "sh", "-c", "tty; stty size")
	if res.code != 0 || !strings.Contains(res.stdout, "/dev/pts/") || !strings.Contains(res.stdout, "\r\n") {
		t.Fatalf("docker run -t: %s", res)
	}
}

// gondolin is the dev dockerd's default runtime: a plain docker run boots a
// micro-VM (its kernel is not the host's).
func TestDockerDefaultRuntime(t *testing.T) {
	dockerHost(t)
	res := docker(t, nil, "run", "--rm", testImage(t), "uname", "-r")
	if res.code != 0 || strings.TrimSpace(res.stdout) == hostKernel(t) {
		t.Fatalf("plain docker run did not use a micro-VM: %s (host kernel %s)", res, hostKernel(t))
	}
}

// daemon.json runtime options reach the shim: the dev dockerd's
// "gondolin-small" runtime names a runtime config with
// default_memory_mib = 320, so its guest has less memory than the default
// 512 MiB.
func TestDockerRuntimeOptions(t *testing.T) {
	memTotal := func(runtime string) int {
		res := dockerRun(t, runtime, nil, "sh", "-c", "awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo")
		if res.code != 0 {
			t.Fatalf("%s: %s", runtime, res)
		}
		n, err := strconv.Atoi(strings.TrimSpace(res.stdout))
		if err != nil {
			t.Fatalf("%s: %s", runtime, res)
		}
		return n
	}
	small, normal := memTotal("gondolin-small"), memTotal("gondolin")
	if small > 320 || normal <= 320 {
		t.Fatalf("guest memory: gondolin-small %d MiB (want at most 320), gondolin %d MiB", small, normal)
	}
}

// --network host: the container shares the host's namespace for its
// upstream flows, but the policy still decides: a destination not on the
// allowlist is refused and audited.
func TestDockerNetworkHostKeepsPolicy(t *testing.T) {
	dockerHost(t)
	name := newID(t)
	res := docker(t, nil, "run", "--name", name, "--network", "host", "--runtime", "gondolin", testImage(t),
		"sh", "-c", "wget -q -O- http://198.51.100.7:8080/ 2>&1; echo rc=$?")
	id := strings.TrimSpace(docker(t, nil, "inspect", "-f", "{{.Id}}", name).stdout)
	t.Cleanup(func() { docker(t, nil, "rm", "-f", name) })
	if res.code != 0 || strings.Contains(res.stdout, "rc=0") {
		t.Fatalf("a destination off the allowlist was reached with --network host: %s", res)
	}
	audit, err := os.ReadFile("/var/log/gondolin/audit/" + dockerNamespace + "/" + id + ".jsonl")
	if err != nil || !strings.Contains(string(audit), `"decision":"denied"`) || !strings.Contains(string(audit), "198.51.100.7") {
		t.Fatalf("no denial audited (%v):\n%s", err, audit)
	}
}

// --memory and --cpus size the VM and become the container's cgroup limits
// in the guest.
func TestDockerResources(t *testing.T) {
	res := dockerRun(t, "gondolin", []string{"--memory", "256m", "--cpus", "2"},
		"sh", "-c", "nproc; awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo; cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max")
	f := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if res.code != 0 || len(f) != 4 {
		t.Fatalf("%s", res)
	}
	mem, _ := strconv.Atoi(f[1])
	// The VM gets the limit plus memory_overhead_mib (128) for the guest
	// kernel and agent; the container's cgroup gets the limit itself.
	if f[0] != "2" || mem <= 256 || mem > 384 || f[2] != "268435456" || f[3] != "200000 100000" {
		t.Fatalf("want 2 vCPUs, 256 MiB < guest memory <= 384 MiB, memory.max 268435456, cpu.max 200000 100000: %s", res)
	}
}

// docker logs -f follows the output until the container exits.
func TestDockerLogsFollow(t *testing.T) {
	id := dockerDetached(t, "gondolin", nil, "sh", "-c", "echo first; sleep 2; echo second")
	res := docker(t, nil, "logs", "-f", id)
	if res.code != 0 || res.stdout != "first\nsecond\n" {
		t.Fatalf("docker logs -f: %s", res)
	}
}

// docker network connect and disconnect on a running container: the guest
// gains and loses the second network's address, and a container on that
// network reaches the guest's server at it.
func TestDockerNetworkConnect(t *testing.T) {
	dockerHost(t)
	network := "gnet-" + newID(t)
	if res := docker(t, nil, "network", "create", network); res.code != 0 {
		t.Fatalf("network create: %s", res)
	}
	t.Cleanup(func() { docker(t, nil, "network", "rm", network) })
	id := dockerDetached(t, "gondolin", nil,
		"sh", "-c", "mkdir -p /www && echo connected > /www/index.html && exec httpd -f -p 80 -h /www")
	if res := docker(t, nil, "network", "connect", network, id); res.code != 0 {
		t.Fatalf("network connect: %s", res)
	}
	ip := strings.TrimSpace(docker(t, nil, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+network+`").IPAddress}}`, id).stdout)
	if ip == "" {
		t.Fatal("no address on the connected network")
	}
	guestAddrs := func() string {
		return docker(t, nil, "exec", id, "cat", "/proc/net/fib_trie").stdout
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the guest's addresses are\n%s", what, guestAddrs())
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	waitFor("the guest never got "+ip, func() bool { return strings.Contains(guestAddrs(), ip) })
	// Docker edits the container's /etc/hosts on the host in place; the
	// guest sees the file as it is now.
	hostsPath := strings.TrimSpace(docker(t, nil, "inspect", "-f", "{{.HostsPath}}", id).stdout)
	hostHosts := func() string { b, _ := os.ReadFile(hostsPath); return string(b) }
	waitFor("the guest's /etc/hosts differs from "+hostsPath, func() bool {
		return docker(t, nil, "exec", id, "cat", "/etc/hosts").stdout == hostHosts()
	})
	if !strings.Contains(hostHosts(), ip) {
		t.Logf("note: Docker did not add %s to %s", ip, hostsPath)
	}
	res := docker(t, nil, "run", "--rm", "--runtime", "runc", "--network", network, testImage(t), "wget", "-qO-", "http://"+ip+"/index.html")
	if res.code != 0 || strings.TrimSpace(res.stdout) != "connected" {
		t.Fatalf("a container on %s cannot reach the gondolin one at %s: %s", network, ip, res)
	}
	if res := docker(t, nil, "network", "disconnect", network, id); res.code != 0 {
		t.Fatalf("network disconnect: %s", res)
	}
	waitFor("the guest kept "+ip+" after disconnect", func() bool { return !strings.Contains(guestAddrs(), ip) })
}

// A published UDP port reaches a UDP server in the guest, and its replies
// come back to the client.
func TestDockerPublishedUDPPort(t *testing.T) {
	dockerHost(t)
	bin := filepath.Join(t.TempDir(), "udpecho")
	build := exec.Command("go", "build", "-o", bin, "./testdata/udpecho")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build udpecho: %v\n%s", err, out)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostPort := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	dockerDetached(t, "gondolin", []string{"-p", fmt.Sprintf("%d:5353/udp", hostPort), "-v", bin + ":/udpecho:ro"}, "/udpecho", "5353")
	conn, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", hostPort))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 100)
	deadline := time.Now().Add(60 * time.Second)
	for {
		// The port is published once the guest's socket is seen;
		// datagrams sent before that are lost, as UDP's may be.
		conn.Write([]byte("ping"))
		conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := conn.Read(buf)
		if err == nil {
			if string(buf[:n]) != "echo:ping" {
				t.Fatalf("reply %q", buf[:n])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reply from the guest's UDP server through the published port: %v", err)
		}
	}
	// A second datagram on the same flow.
	conn.Write([]byte("again"))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "echo:again" {
		t.Fatalf("second reply %q, %v", buf[:n], err)
	}
}
