//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"

	gruntime "github.com/earendil-works/gondolin-containerd/runtime"
)

// CRI pods through the private containerd's CRI plugin and crictl (make
// dev-up gives it a CNI bridge and a pause image built here): the same
// scenario on runc and on gondolin, where the pod is one VM.

// criNamespace is the containerd namespace of CRI's containers.
const criNamespace = "k8s.io"

// crictl runs crictl against the dev containerd's CRI endpoint.
func crictl(t *testing.T, args ...string) result {
	t.Helper()
	endpoint := os.Getenv("CONTAINER_RUNTIME_ENDPOINT")
	if endpoint == "" {
		t.Fatal("CONTAINER_RUNTIME_ENDPOINT is not set: source .cache/dev/env (make dev-up)")
	}
	full := append([]string{"--runtime-endpoint", endpoint, "--image-endpoint", endpoint, "--timeout", "2m"}, args...)
	return command(t, nil, "crictl", full...)
}

// crictlOK runs crictl and fails the test unless it succeeds; it returns
// what it printed, trimmed.
func crictlOK(t *testing.T, args ...string) string {
	t.Helper()
	res := crictl(t, args...)
	if res.code != 0 {
		t.Fatalf("crictl %s: %s", strings.Join(args, " "), res)
	}
	return strings.TrimSpace(res.stdout)
}

// writeJSON writes v as JSON into dir/name and returns its path.
func writeJSON(t *testing.T, dir, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// criPod is a pod sandbox made by crictl runp, removed when the test ends.
type criPod struct {
	id, config, dir, handler string
}

// runPod runs a pod whose containers share its PID namespace, on handler
// ("runc" or "gondolin"), with linux settings merged into its config.
func runPod(t *testing.T, handler string, security map[string]any) *criPod {
	t.Helper()
	return runPodWith(t, handler, security, nil, nil)
}

// runPodAnnotated runs a pod with annotations on handler.
func runPodAnnotated(t *testing.T, handler string, annotations map[string]string) *criPod {
	t.Helper()
	return runPodWith(t, handler, nil, annotations, nil)
}

// runPodWith runs a pod on handler with linux security settings,
// annotations and port mappings (CRI's PortMapping, as JSON fields).
func runPodWith(t *testing.T, handler string, security map[string]any, annotations map[string]string, ports []map[string]any) *criPod {
	t.Helper()
	return runPodConfig(t, handler, map[string]any{
		"hostname":      "pod-" + handler,
		"linux":         map[string]any{"security_context": security},
		"annotations":   annotations,
		"port_mappings": ports,
	})
}

// writePodConfig writes a pod sandbox config (CRI's PodSandboxConfig as
// JSON) into dir: fields over a fresh name, its log directory in dir, and
// one PID namespace for the pod unless linux.security_context says.
func writePodConfig(t *testing.T, dir string, fields map[string]any) string {
	t.Helper()
	name := newID(t)
	cfg := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "gondolin-test", "uid": name, "attempt": 0},
		"log_directory": filepath.Join(dir, "logs"),
	}
	for k, v := range fields {
		cfg[k] = v
	}
	linux, _ := cfg["linux"].(map[string]any)
	if linux == nil {
		linux = map[string]any{}
		cfg["linux"] = linux
	}
	security, _ := linux["security_context"].(map[string]any)
	if security == nil {
		security = map[string]any{}
		linux["security_context"] = security
	}
	if _, ok := security["namespace_options"]; !ok {
		security["namespace_options"] = map[string]any{"pid": 0} // POD: one PID namespace
	}
	return writeJSON(t, dir, "pod.json", cfg)
}

// runPodConfig runs a pod of the config fields on handler.
func runPodConfig(t *testing.T, handler string, fields map[string]any) *criPod {
	t.Helper()
	p := &criPod{dir: t.TempDir(), handler: handler}
	p.config = writePodConfig(t, p.dir, fields)
	p.id = crictlOK(t, "runp", "--runtime", handler, p.config)
	t.Cleanup(func() {
		crictl(t, "stopp", p.id)
		crictl(t, "rmp", "-f", p.id)
		if handler != "runc" {
			assertNoLeftoversIn(t, criNamespace, p.id)
		}
	})
	return p
}

// start creates and starts a container of the test image in the pod,
// running script, and returns its id.
func (p *criPod) start(t *testing.T, name, script string) string {
	t.Helper()
	return p.startImage(t, name, testImage(t), script, nil)
}

// containerConfig writes the config of a container of image in the pod
// running script, with annotations.
func (p *criPod) containerConfig(t *testing.T, name, image, script string, annotations map[string]string) string {
	t.Helper()
	return writeJSON(t, p.dir, name+".json", map[string]any{
		"metadata":    map[string]any{"name": name},
		"image":       map[string]any{"image": image},
		"command":     []string{"sh", "-c", script},
		"log_path":    name + ".log",
		"linux":       map[string]any{},
		"annotations": annotations,
	})
}

// startImage creates and starts a container of image in the pod.
func (p *criPod) startImage(t *testing.T, name, image, script string, annotations map[string]string) string {
	t.Helper()
	cfg := p.containerConfig(t, name, image, script, annotations)
	id := crictlOK(t, "create", p.id, cfg, p.config)
	t.Cleanup(func() {
		crictl(t, "rm", "-f", id)
		if p.handler != "runc" {
			assertNoLeftoversIn(t, criNamespace, id)
		}
	})
	crictlOK(t, "start", id)
	return id
}

// waitLog waits until the container's log has want.
func waitLog(t *testing.T, id, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var res result
	for time.Now().Before(deadline) {
		if res = crictl(t, "logs", id); strings.Contains(res.stdout, want) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("log of %s never showed %q: %s", id, want, res)
}

// podProcesses lists the host processes that serve pod sandbox id: its
// VMM and file servers, named by their state directory.
func podProcesses(id string) []string {
	var found []string
	for _, l := range leftoversIn(criNamespace, id) {
		if strings.HasPrefix(l, "process ") {
			found = append(found, l)
		}
	}
	return found
}

// assertOnePodVM checks that gondolin serves pod sandbox id with one VMM
// and one file server, and that its containers have no host processes of
// their own.
func assertOnePodVM(t *testing.T, id string, containers ...string) {
	t.Helper()
	procs := podProcesses(id)
	var vmms, servers int
	for _, p := range procs {
		// "process PID: ARGV0 ARGS...": QEMU's C virtiofsd lives in a
		// directory named qemu, so the program's own name decides.
		_, cmdline, _ := strings.Cut(p, ": ")
		argv0, _, _ := strings.Cut(cmdline, " ")
		switch name := filepath.Base(argv0); {
		case strings.HasPrefix(name, "virtiofsd"):
			servers++
		case strings.HasPrefix(name, "qemu-system"):
			vmms++
		}
	}
	// A virtiofsd in its sandbox runs as two processes (the sandbox's
	// parent and child), both with the state directory.
	if vmms != 1 || servers == 0 || servers > 2 {
		t.Errorf("pod processes: %d VMMs, %d file server processes, want one VMM and one file server:\n%s", vmms, servers, strings.Join(procs, "\n"))
	}
	for _, c := range containers {
		if own := podProcesses(c); len(own) > 0 {
			t.Errorf("container %s has host processes of its own: %v", c, own)
		}
	}
}

// gondolinHandler is the CRI runtime handler of gondolin the tests run: the
// dev containerd's "gondolin", or another one (hack/integration.sh's booted
// pass names "gondolin-test", whose runtime config it rewrites).
func gondolinHandler() string {
	if h := os.Getenv("GONDOLIN_TEST_CRI_HANDLER"); h != "" {
		return h
	}
	return "gondolin"
}

// A pod with two containers, as CRI drives it: on gondolin its containers
// run in one VM (one VMM, one file server), share the pod's PID and IPC
// namespaces (/dev/shm) and hostname as on runc, answer exec, keep their
// logs after they exit, come and go while the pod runs, and leave nothing
// behind when the pod is removed.
func TestCRIPodLikeRunc(t *testing.T) {
	for _, handler := range []string{"runc", gondolinHandler()} {
		t.Run(handler, func(t *testing.T) {
			pod := runPod(t, handler, nil)
			c1 := pod.start(t, "c1", "echo c1 up; echo from-c1 >/dev/shm/f; exec sleep 601")
			c2 := pod.start(t, "c2", "echo c2 up; exec sleep 602")
			waitLog(t, c1, "c1 up")
			waitLog(t, c2, "c2 up")

			if handler != "runc" {
				assertOnePodVM(t, pod.id, c1, c2)
			}

			if out := crictlOK(t, "exec", c2, "cat", "/dev/shm/f"); out != "from-c1" {
				t.Errorf("c2 reads %q from the pod's /dev/shm, want from-c1", out)
			}
			if ps := crictlOK(t, "exec", c2, "ps"); !strings.Contains(ps, "sleep 601") {
				t.Errorf("c2 does not see c1's process in the pod's PID namespace:\n%s", ps)
			}
			h1, h2 := crictlOK(t, "exec", c1, "hostname"), crictlOK(t, "exec", c2, "hostname")
			if h1 != "pod-"+handler || h2 != h1 {
				t.Errorf("hostnames %q and %q, want the pod's, pod-%s", h1, h2, handler)
			}
			if out := crictlOK(t, "exec", c1, "sh", "-c", "echo $((6*7))"); out != "42" {
				t.Errorf("exec printed %q", out)
			}
			stats := crictlOK(t, "stats", "-o", "json", "--id", c2)
			if !strings.Contains(stats, `"workingSetBytes"`) {
				t.Errorf("crictl stats of c2: %s", stats)
			}

			// c1 goes; c2 keeps running, c1's log stays readable.
			crictlOK(t, "stop", "-t", "2", c1)
			if logs := crictlOK(t, "logs", c1); !strings.Contains(logs, "c1 up") {
				t.Errorf("the log of the stopped c1: %q", logs)
			}
			crictlOK(t, "rm", c1)
			if out := crictlOK(t, "exec", c2, "echo", "still"); out != "still" {
				t.Errorf("exec in c2 after c1 went: %q", out)
			}
			// A third container joins the running pod.
			c3 := pod.start(t, "c3", "echo c3 up; cat /dev/shm/f; exec sleep 603")
			waitLog(t, c3, "from-c1")
			crictlOK(t, "stopp", pod.id)
			crictlOK(t, "rmp", pod.id)
		})
	}
}

// A pod that asks for the host's PID namespace cannot have it in a VM: the
// sandbox's create fails saying so, and nothing is left.
func TestCRIHostNamespacesRefused(t *testing.T) {
	cfg := writePodConfig(t, t.TempDir(), map[string]any{
		"linux": map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"pid": 2}}}, // NODE
	})
	before := stateDirs(t)
	res := crictl(t, "runp", "--runtime", "gondolin", cfg)
	if res.code == 0 {
		id := strings.TrimSpace(res.stdout)
		crictl(t, "stopp", id)
		crictl(t, "rmp", "-f", id)
		t.Fatalf("a hostPID pod ran on gondolin: %s", res)
	}
	if !strings.Contains(res.stderr, "hostPID") {
		t.Errorf("the error does not name hostPID: %s", res)
	}
	// The failed sandbox's id is not printed: no new state directory may
	// be left under the state root.
	for dir := range stateDirs(t) {
		if !before[dir] {
			t.Errorf("state directory left: %s", dir)
		}
	}
}

// stateDirs are the state directories under the shim's state root.
func stateDirs(t *testing.T) map[string]bool {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(gruntime.DefaultStateRoot, "*", "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, f := range dirs {
		set[filepath.Dir(f)] = true
	}
	return set
}

// criGateway is the host's address on the CRI pods' CNI bridge (the first
// of GONDOLIN_CNI_SUBNET), where a test server reachable from the pods'
// network namespaces listens. The bridge comes with the first pod: a runc
// pod is run once if it is not there yet.
func criGateway(t *testing.T) string {
	t.Helper()
	subnet := os.Getenv("GONDOLIN_CNI_SUBNET")
	prefix, err := netip.ParsePrefix(subnet)
	if err != nil {
		t.Fatalf("GONDOLIN_CNI_SUBNET %q: %v (source .cache/dev/env)", subnet, err)
	}
	gw := prefix.Masked().Addr().Next()
	has := func() bool {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(net.IP(gw.AsSlice())) {
				return true
			}
		}
		return false
	}
	if !has() {
		p := runPod(t, "runc", nil)
		crictlOK(t, "stopp", p.id)
		crictlOK(t, "rmp", p.id)
		if !has() {
			t.Fatalf("no address %s on this host after a CRI pod ran: is the CNI bridge of hack/dev-up.sh there?", gw)
		}
	}
	return gw.String()
}

// The egress policy is the pod's: set on the pod, it applies to each of its
// containers; a container that asks for a policy of its own is refused.
func TestCRIPodEgressPolicy(t *testing.T) {
	gw := criGateway(t)
	u := startUpstreamOn(t, gw)
	setConfig := testRuntimeConfig(t)
	text, _ := runtimeConfigText(t.TempDir(), u, gw, "")
	setConfig(text)
	pod := runPodAnnotated(t, "gondolin-test", map[string]string{"io.gondolin.net.allow": fmt.Sprintf("api.x.test:%d", u.port)})
	curl := func(host string) string {
		return fmt.Sprintf("curl -s -o /dev/null -w '%%{http_code}' --max-time 20 https://%s:%d/; echo", host, u.port)
	}
	for _, name := range []string{"c1", "c2"} {
		id := pod.startImage(t, name, distroImage(t), "sleep 600", nil)
		if got := crictlOK(t, "exec", id, "bash", "-c", curl("api.x.test")); got != "200" {
			t.Errorf("%s: the allowed host answered %q, want 200", name, got)
		}
		if got := crictlOK(t, "exec", id, "bash", "-c", curl("other.test")); got == "200" {
			t.Errorf("%s: a host the pod's policy does not allow answered", name)
		}
	}
	for _, r := range u.seen() {
		if !strings.HasPrefix(r, "api.x.test:") {
			t.Errorf("upstream saw a request the pod's policy denies: %s", r)
		}
	}
	// A container with a policy of its own is refused by name when its task
	// is created (CRI's start).
	cfg := pod.containerConfig(t, "c3", testImage(t), "true", map[string]string{"io.gondolin.net.allow": "other.test"})
	id := crictlOK(t, "create", pod.id, cfg, pod.config)
	t.Cleanup(func() {
		crictl(t, "rm", "-f", id)
		assertNoLeftoversIn(t, criNamespace, id)
	})
	res := crictl(t, "start", id)
	if res.code == 0 || !strings.Contains(res.stderr, "io.gondolin.net.allow") || !strings.Contains(res.stderr, "set them on the pod") {
		t.Errorf("a container with its own policy: %s", res)
	}
}

// A pod's IP and its hostPort reach a server in one of its containers, on
// runc and on gondolin (where the shim publishes the guest's listener in the
// pod's network namespace, and CNI's portmap forwards the host port to it);
// exec -s (ExecSync, what probes use) and exec with a terminal work.
func TestCRIPodPortsAndExec(t *testing.T) {
	gw := criGateway(t)
	for _, handler := range []string{"runc", "gondolin"} {
		t.Run(handler, func(t *testing.T) {
			hostPort := unusedPort(t, gw)
			pod := runPodWith(t, handler, map[string]any{"namespace_options": map[string]any{"pid": 0}}, nil, []map[string]any{
				{"protocol": 0, "container_port": 8080, "host_port": hostPort, "host_ip": gw},
			})
			id := pod.start(t, "web", "mkdir -p /www && echo hello-"+handler+" >/www/index.html && exec httpd -f -p 8080 -h /www")
			var inspect struct {
				Status struct {
					Network struct {
						IP string `json:"ip"`
					} `json:"network"`
				} `json:"status"`
			}
			if err := json.Unmarshal([]byte(crictlOK(t, "inspectp", pod.id)), &inspect); err != nil {
				t.Fatal(err)
			}
			podIP := inspect.Status.Network.IP
			if !strings.HasPrefix(podIP, strings.TrimSuffix(prefixOf(t), "0/24")) {
				t.Errorf("pod IP %q is not in the CNI subnet", podIP)
			}
			for _, addr := range []string{net.JoinHostPort(podIP, "8080"), net.JoinHostPort(gw, fmt.Sprint(hostPort))} {
				if got := httpGet(t, "http://"+addr+"/"); got != "hello-"+handler+"\n" {
					t.Errorf("GET %s: %q", addr, got)
				}
			}
			if out := crictlOK(t, "exec", "-s", id, "sh", "-c", "echo sync $((1+1))"); out != "sync 2" {
				t.Errorf("exec -s printed %q", out)
			}
			endpoint := os.Getenv("CONTAINER_RUNTIME_ENDPOINT")
			cmd := exec.Command("crictl", "--runtime-endpoint", endpoint, "exec", "-it", id, "sh", "-c", "tty; test -t 1 && echo is-a-terminal")
			_, out := startInPty(t, cmd, console.WinSize{Height: 33, Width: 101})
			if err := cmd.Wait(); err != nil {
				t.Errorf("exec -it: %v: %s", err, out.String())
			}
			// The terminal's reader may still be copying what crictl wrote.
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !strings.Contains(out.String(), "is-a-terminal"); {
				time.Sleep(50 * time.Millisecond)
			}
			if s := out.String(); !strings.Contains(s, "/dev/pts/") || !strings.Contains(s, "is-a-terminal") {
				t.Errorf("exec -it: no terminal: %q", s)
			}
		})
	}
}

// unusedPort is a TCP port nothing listens on at addr just now.
func unusedPort(t *testing.T, addr string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// prefixOf is GONDOLIN_CNI_SUBNET.
func prefixOf(t *testing.T) string {
	t.Helper()
	return os.Getenv("GONDOLIN_CNI_SUBNET")
}

// httpGet fetches url (retrying while the server comes up) and returns the body.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	var lastErr error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := client.Get(url)
		if err != nil {
			lastErr = err
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode == 200 {
			return string(b)
		}
		lastErr = fmt.Errorf("status %d, %v", resp.StatusCode, err)
	}
	t.Errorf("GET %s: %v", url, lastErr)
	return ""
}

// A pod's VM is sized by the pod's summed limits (the kubelet passes them
// with the sandbox), and each container's own limit holds in its cgroup
// inside the guest.
func TestCRIPodSizedByItsLimits(t *testing.T) {
	pod := runPodConfig(t, gondolinHandler(), map[string]any{
		"linux": map[string]any{
			"resources": map[string]any{"memory_limit_in_bytes": 256 << 20, "cpu_quota": 100000, "cpu_period": 100000},
		},
	})
	cfg := pod.config
	ccfg := writeJSON(t, pod.dir, "c1.json", map[string]any{
		"metadata": map[string]any{"name": "c1"},
		"image":    map[string]any{"image": testImage(t)},
		"command":  []string{"sleep", "600"},
		"log_path": "c1.log",
		"linux":    map[string]any{"resources": map[string]any{"memory_limit_in_bytes": 64 << 20}},
	})
	id := crictlOK(t, "create", pod.id, ccfg, cfg)
	t.Cleanup(func() { crictl(t, "rm", "-f", id) })
	crictlOK(t, "start", id)
	// 256 MiB of limits plus memory_overhead_mib (128): the guest's
	// MemTotal is that less what its kernel reserves.
	kib, err := strconv.Atoi(strings.Fields(crictlOK(t, "exec", id, "sh", "-c", "grep MemTotal /proc/meminfo"))[1])
	if err != nil {
		t.Fatal(err)
	}
	if mib := kib >> 10; mib < 300 || mib > 384 {
		t.Errorf("the pod's VM has %d MiB, want 256 + 128 less the kernel's reserve", mib)
	}
	if n := crictlOK(t, "exec", id, "nproc"); n != "1" {
		t.Errorf("the pod's VM has %s vCPUs, want 1 (a quota of one CPU)", n)
	}
	if max := crictlOK(t, "exec", id, "cat", "/sys/fs/cgroup/memory.max"); max != strconv.Itoa(64<<20) {
		t.Errorf("the container's memory.max in the guest is %q, want %d", max, 64<<20)
	}
}

// A pod whose shim dies leaves nothing behind once CRI removes it: the
// sandbox's `shim delete` cleans up the pod's other containers too, for
// which containerd runs none.
func TestCRIPodShimKilled(t *testing.T) {
	pod := runPod(t, "gondolin", nil)
	c1 := pod.start(t, "c1", "echo c1 up; exec sleep 601")
	c2 := pod.start(t, "c2", "echo c2 up; exec sleep 602")
	waitLog(t, c2, "c2 up")
	if err := syscall.Kill(shimPID(t, pod.id), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// CRI sees the containers exit once the shim is gone.
	deadline := time.Now().Add(60 * time.Second)
	for {
		out := crictlOK(t, "ps", "-a", "-q", "--state", "exited", "--pod", pod.id)
		if strings.Contains(out, c1) && strings.Contains(out, c2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pod's containers did not exit after its shim was killed: %s", crictl(t, "ps", "-a", "--pod", pod.id))
		}
		time.Sleep(200 * time.Millisecond)
	}
	crictlOK(t, "stopp", pod.id)
	crictlOK(t, "rmp", pod.id)
	for _, id := range []string{pod.id, c1, c2} {
		assertNoLeftoversIn(t, criNamespace, id)
	}
}

// A root, privileged container of a pod that mounts its pod's share itself
// (the guest is hostile: it can) finds the share's top level read-only: it
// cannot add, rename or replace any container's entry, so nothing it does
// there reaches the host beyond its own pod's files, and the pod leaves
// nothing behind.
func TestHostilePodShare(t *testing.T) {
	pod := runPodWith(t, "gondolin", map[string]any{"privileged": true, "namespace_options": map[string]any{"pid": 0}}, nil, nil)
	cfg := writeJSON(t, pod.dir, "evil.json", map[string]any{
		"metadata": map[string]any{"name": "evil"},
		"image":    map[string]any{"image": testImage(t)},
		"command": []string{"sh", "-c", `mkdir -p /mnt/pod && mount -t virtiofs pod /mnt/pod || { echo NO-MOUNT; exit 0; }
			echo entries: $(ls /mnt/pod | wc -l)
			touch /mnt/pod/planted 2>/dev/null && echo TOP-WRITABLE
			mkdir /mnt/pod/c9 2>/dev/null && echo TOP-MKDIR
			ln -s / /mnt/pod/escape 2>/dev/null && echo TOP-SYMLINK
			for d in /mnt/pod/*; do mv "$d" "$d.x" 2>/dev/null && echo RENAMED; rm -rf "$d" 2>/dev/null; [ -e "$d" ] || echo REMOVED; done
			echo finished; exec sleep 600`},
		"log_path": "evil.log",
		"linux":    map[string]any{"security_context": map[string]any{"privileged": true}},
	})
	id := crictlOK(t, "create", pod.id, cfg, pod.config)
	t.Cleanup(func() { crictl(t, "rm", "-f", id); assertNoLeftoversIn(t, criNamespace, id) })
	crictlOK(t, "start", id)
	waitLog(t, id, "finished")
	logs := crictlOK(t, "logs", id)
	if strings.Contains(logs, "NO-MOUNT") || !strings.Contains(logs, "entries: ") {
		t.Fatalf("the test could not mount the pod's share in the guest, so it proves nothing: %s", logs)
	}
	t.Logf("what the guest did:\n%s", logs)
	for _, bad := range []string{"TOP-WRITABLE", "TOP-MKDIR", "TOP-SYMLINK", "RENAMED", "REMOVED"} {
		if strings.Contains(logs, bad) {
			t.Errorf("the guest changed the pod share's top level (%s):\n%s", bad, logs)
		}
	}
	// The host's view of the share holds only what the shim made.
	for _, pattern := range []string{"*/pod/mounts/planted", "*/pod/mounts/c9", "*/pod/mounts/escape", "*/pod/mounts/*.x"} {
		if m, _ := filepath.Glob(filepath.Join(gruntime.DefaultStateRoot, pattern)); len(m) > 0 {
			t.Errorf("on the host: %v", m)
		}
	}
}
