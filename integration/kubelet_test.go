//go:build integration

package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/earendil-works/gondolin-containerd/integration/testimage"
)

// A standalone kubelet (no API server: static pods from a directory) drives
// a containerd of the test's own, which has runc as its default runtime and
// gondolin as the runtime "untrusted". A standalone kubelet has no
// RuntimeClass informer and sends every pod with runtime_handler "", so
// runtimeClassName cannot choose gondolin; containerd's CRI plugin gives a
// pod annotated io.kubernetes.cri.untrusted-workload: "true" the runtime
// named "untrusted" instead (docs/pods.md).
//
// The kubelet changes the host: it sets kernel tunables (vm.overcommit_memory,
// kernel.panic, kernel.panic_on_oops, ...), makes cgroups under its cgroup
// root and makes its root directory a shared bind mount. Everything it and
// the test's containerd make lives in the test's temporary directory, a
// cgroup root and a CNI bridge of the test's own, and is undone when the
// test ends, the tunables put back as they were.

// kubeletEnv names the kubelet binary (.cache/dev/env); without it the test
// looks in make tools' directory.
const kubeletEnv = "GONDOLIN_KUBELET"

// kubeletTunables are the sysctls the kubelet sets at its start
// (pkg/kubelet/cm setupKernelTunables) and the one the CNI bridge plugin
// sets for a gateway: the test puts them back as it found them.
var kubeletTunables = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward",
}

// kubeletBinary is the kubelet to run: GONDOLIN_KUBELET, else make tools'
// .cache/tools/bin/kubelet. A missing kubelet fails the test.
func kubeletBinary(t *testing.T) string {
	t.Helper()
	path := os.Getenv(kubeletEnv)
	if path == "" {
		abs, err := filepath.Abs(filepath.Join("..", ".cache", "tools", "bin", "kubelet"))
		if err != nil {
			t.Fatal(err)
		}
		path = abs
	}
	if fi, err := os.Stat(path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("no kubelet at %s (%s, else .cache/tools/bin/kubelet): the default `make tools` leaves the kubelet out: hack/build-tools.sh .cache/tools kubelet builds it (make tools' kubelet component)", path, kubeletEnv)
	}
	return path
}

// kubeletNode is a standalone kubelet and the containerd it drives, both
// the test's own.
type kubeletNode struct {
	dir        string
	socket     string // containerd's
	manifests  string // the kubelet's static pod directory
	cgroupRoot string // below each hierarchy's root
}

// startKubeletNode starts a containerd (runtimes runc, the default, and
// untrusted = gondolin; a CNI bridge of its own; the test images) and a
// standalone kubelet on it, points crictl at that containerd for the rest
// of the test, and stops and removes everything when the test ends.
func startKubeletNode(t *testing.T) *kubeletNode {
	t.Helper()
	kubelet := kubeletBinary(t)
	tag := randomHex(t, 3)
	n := &kubeletNode{dir: t.TempDir(), cgroupRoot: "/gondolin-kubelet-" + tag}
	n.socket = filepath.Join(n.dir, "run", "containerd.sock")
	n.manifests = filepath.Join(n.dir, "manifests")
	for _, d := range []string{n.manifests, filepath.Join(n.dir, "run"), filepath.Join(n.dir, "cni")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	restoreTunables(t)
	n.makeCgroupRoot(t)
	n.startContainerd(t, "gkub"+tag)
	t.Setenv("CONTAINER_RUNTIME_ENDPOINT", "unix://"+n.socket)
	n.startKubelet(t, kubelet)
	return n
}

// randomHex is n random bytes in hex.
func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// restoreTunables records kubeletTunables and writes back, when the test
// ends, those that changed.
func restoreTunables(t *testing.T) {
	t.Helper()
	saved := map[string]string{}
	for _, name := range kubeletTunables {
		b, err := os.ReadFile("/proc/sys/" + name)
		if err != nil {
			t.Fatalf("read the sysctl the kubelet may change: %v", err)
		}
		saved[name] = strings.TrimSpace(string(b))
	}
	t.Cleanup(func() {
		for _, name := range kubeletTunables {
			path := "/proc/sys/" + name
			b, err := os.ReadFile(path)
			if err == nil && strings.TrimSpace(string(b)) == saved[name] {
				continue
			}
			if err := os.WriteFile(path, []byte(saved[name]+"\n"), 0o644); err != nil {
				t.Errorf("put sysctl %s back to %s: %v", name, saved[name], err)
			}
		}
	})
}

// cgroupHierarchies are the mount points of the host's cgroup file systems
// (each v1 hierarchy and the v2 one).
func cgroupHierarchies(t *testing.T) []string {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, line := range strings.Split(string(mi), "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS... - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) >= 5 && len(g) >= 1 && (g[0] == "cgroup" || g[0] == "cgroup2") && strings.HasPrefix(f[4], "/sys/fs/cgroup") {
			dirs = append(dirs, f[4])
		}
	}
	if len(dirs) == 0 {
		t.Fatal("no cgroup file system is mounted under /sys/fs/cgroup")
	}
	return dirs
}

// makeCgroupRoot makes the kubelet's cgroup root in every hierarchy (the
// kubelet refuses a root that does not exist) and removes it, with all the
// kubelet made below it, when the test ends.
func (n *kubeletNode) makeCgroupRoot(t *testing.T) {
	t.Helper()
	hierarchies := cgroupHierarchies(t)
	t.Cleanup(func() {
		for _, h := range hierarchies {
			if err := removeCgroupTree(filepath.Join(h, n.cgroupRoot)); err != nil {
				t.Errorf("remove the kubelet's cgroups: %v", err)
			}
		}
	})
	for _, h := range hierarchies {
		dir := filepath.Join(h, n.cgroupRoot)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// A v1 cpuset cgroup starts with no CPUs and memory nodes: give it
		// its parent's, as the kubelet does for the cgroups it makes.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(h, f)); err == nil && filepath.Base(h) == "cpuset" {
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// removeCgroupTree removes the cgroup dir and those below it, deepest
// first. A missing dir is fine.
func removeCgroupTree(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range slices.Backward(dirs) {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// startContainerd starts the test's containerd with the CNI bridge
// bridgeName, imports the test and pause images into CRI's namespace, and
// stops it (its pods removed first, its shims killed) when the test ends.
func (n *kubeletNode) startContainerd(t *testing.T, bridgeName string) {
	t.Helper()
	containerdBin, err := exec.LookPath("containerd")
	if err != nil {
		t.Fatalf("containerd is not on PATH: `make tools` builds it into .cache/tools/bin (source .cache/dev/env): %v", err)
	}
	cniBin := os.Getenv("GONDOLIN_CNI_BIN_DIR")
	if cniBin == "" {
		t.Fatal("GONDOLIN_CNI_BIN_DIR is not set: source .cache/dev/env (make dev-up)")
	}
	pause := envImage(t, "GONDOLIN_PAUSE_IMAGE")
	subnet := freeSubnet(t)
	confDir := filepath.Join(n.dir, "cni", "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// As hack/dev-up.sh's CRI network: a bridge with host-local addresses,
	// no masquerading; the addresses are kept in the test's directory.
	writeJSON(t, confDir, "10-gondolin-kubelet.conflist", map[string]any{
		"cniVersion": "1.0.0",
		"name":       "gondolin-kubelet-test",
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": bridgeName, "isGateway": true, "ipMasq": false, "hairpinMode": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": subnet}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": filepath.Join(n.dir, "cni", "networks"),
			},
		}},
	})
	t.Cleanup(func() {
		if _, err := net.InterfaceByName(bridgeName); err == nil {
			if res := command(t, nil, "ip", "link", "delete", bridgeName); res.code != 0 {
				t.Errorf("delete the test's CNI bridge %s: %s", bridgeName, res)
			}
		}
	})

	config := filepath.Join(n.dir, "containerd.toml")
	text := fmt.Sprintf(`# The containerd of a standalone-kubelet test (integration/kubelet_test.go).
version = 3
root = %q
state = %q
imports = []

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = "debug"

[plugins]
  # runc stays the default runtime; pods annotated
  # io.kubernetes.cri.untrusted-workload get the runtime named "untrusted".
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.untrusted]
    runtime_type = "io.containerd.gondolin.v1"
    pod_annotations = ["io.gondolin.*"]
    container_annotations = ["io.gondolin.*"]

  [plugins."io.containerd.cri.v1.runtime"]
    restrict_oom_score_adj = true

  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [%q]
    conf_dir = %q

  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %q

  [plugins."io.containerd.nri.v1.nri"]
    disable = true
`, filepath.Join(n.dir, "root"), filepath.Join(n.dir, "run", "state"), n.socket, n.socket+".ttrpc",
		cniBin, confDir, pause)
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(n.dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(containerdBin, "--config", config)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group: a signal to the test's does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { n.stopContainerd(t, cmd, exited) })

	deadline := time.Now().Add(60 * time.Second)
	for {
		if res := n.ctr(t, "version"); res.code == 0 {
			break
		}
		select {
		case <-exited:
			t.Fatalf("containerd exited at its start; its log:\n%s", tailFile(log.Name(), 40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s within a minute; its log:\n%s", n.socket, tailFile(log.Name(), 40))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The pause image is made here as dev-up makes it (the same digest).
	pauseTar := filepath.Join(n.dir, "pause.tar")
	if _, err := testimage.WriteFile(pauseTar, testimage.Options{Cmd: testimage.PauseCmd, Name: pause}); err != nil {
		t.Fatalf("build the pause image: %v", err)
	}
	for _, tar := range []string{envImage(t, "GONDOLIN_TEST_IMAGE_TAR"), pauseTar} {
		if res := n.ctr(t, "-n", criNamespace, "images", "import", tar); res.code != 0 {
			t.Fatalf("import %s into the test's containerd: %s", tar, res)
		}
	}
}

// ctr runs ctr against the test's containerd.
func (n *kubeletNode) ctr(t *testing.T, args ...string) result {
	t.Helper()
	return command(t, nil, "ctr", append([]string{"--address", n.socket}, args...)...)
}

// stopContainerd removes every pod left (through CRI, so their network
// namespaces go too), stops containerd, kills shims it left and unmounts
// what is left below the test's directory.
func (n *kubeletNode) stopContainerd(t *testing.T, cmd *exec.Cmd, exited chan struct{}) {
	t.Helper()
	endpoint := "unix://" + n.socket
	if res := command(t, nil, "crictl", "--runtime-endpoint", endpoint, "--timeout", "2m", "rmp", "-a", "-f"); res.code != 0 {
		t.Errorf("remove the test containerd's pods: %s", res)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	// A shim outlives its containerd; those of this one are no test's.
	for _, pid := range pidsOf("-address " + n.socket + " ") {
		t.Errorf("a shim of the test's containerd outlived it (killed): pid %d", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	unmountBelow(t, n.dir)
}

// unmountBelow unmounts every mount point below dir, deepest first (the
// kubelet's root directory is a bind mount of itself).
func unmountBelow(t *testing.T, dir string) {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var points []string
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		p := unescapeMountinfo(f[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			t.Errorf("unmount %s: %v", p, err)
		}
	}
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// freeSubnet is a /24 in 10.89.64.0/18 that no route of the host covers.
func freeSubnet(t *testing.T) string {
	t.Helper()
	routes := command(t, nil, "ip", "-o", "-4", "route", "show", "table", "all").stdout
	for tries := 0; tries < 64; tries++ {
		b := make([]byte, 1)
		_, _ = rand.Read(b)
		subnet := fmt.Sprintf("10.89.%d.0/24", 64+int(b[0])%64)
		if !strings.Contains(routes, strings.TrimSuffix(subnet, "0/24")) {
			return subnet
		}
	}
	t.Fatalf("no free /24 in 10.89.64.0/18; routes:\n%s", routes)
	return ""
}

// tailFile is the last n lines of the file at path.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// startKubelet writes the kubelet's configuration for standalone mode and
// starts it, waits for its health check, and stops it when the test ends.
func (n *kubeletNode) startKubelet(t *testing.T, kubelet string) {
	t.Helper()
	port := ephemeralPort(t)
	root := filepath.Join(n.dir, "kubelet")
	resolv := filepath.Join(n.dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// No --kubeconfig: standalone. Everything the kubelet writes is below
	// the test's directory; its server is off, its health check on a port
	// of the test's; it makes no iptables chains; image garbage collection
	// and eviction do not touch a busy test machine's images or pods.
	config := writeJSON(t, n.dir, "kubelet.json", map[string]any{
		"apiVersion":                    "kubelet.config.k8s.io/v1beta1",
		"kind":                          "KubeletConfiguration",
		"staticPodPath":                 n.manifests,
		"fileCheckFrequency":            "2s",
		"syncFrequency":                 "10s",
		"containerRuntimeEndpoint":      "unix://" + n.socket,
		"cgroupDriver":                  "cgroupfs",
		"cgroupRoot":                    n.cgroupRoot,
		"cgroupsPerQOS":                 true,
		"enforceNodeAllocatable":        []string{"pods"},
		"failCgroupV1":                  false,
		"failSwapOn":                    false,
		"protectKernelDefaults":         false,
		"makeIPTablesUtilChains":        false,
		"localStorageCapacityIsolation": false,
		"enableServer":                  false,
		"readOnlyPort":                  0,
		"healthzBindAddress":            "127.0.0.1",
		"healthzPort":                   port,
		"authentication":                map[string]any{"anonymous": map[string]any{"enabled": true}, "webhook": map[string]any{"enabled": false}},
		"authorization":                 map[string]any{"mode": "AlwaysAllow"},
		"podLogsDir":                    filepath.Join(n.dir, "pod-logs"),
		"volumePluginDir":               filepath.Join(n.dir, "volume-plugins"),
		"resolvConf":                    resolv,
		"imageGCHighThresholdPercent":   100,
		"imageGCLowThresholdPercent":    99,
		"evictionHard": map[string]string{
			"memory.available": "1Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%", "imagefs.available": "1%",
		},
	})
	logPath := filepath.Join(n.dir, "kubelet.log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(kubelet, "--config", config, "--root-dir", root, "--cert-dir", filepath.Join(n.dir, "kubelet-pki"), "--v", "2")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("the kubelet's log (%s), last lines:\n%s", logPath, tailFile(logPath, 60))
		}
	})

	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", port)
	deadline := time.Now().Add(90 * time.Second)
	for {
		if resp, err := http.Get(url); err == nil {
			body := new(bytes.Buffer)
			_, _ = body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && body.String() == "ok" {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("the kubelet exited at its start; its log:\n%s", tailFile(logPath, 60))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the kubelet's %s did not answer ok within 90s; its log:\n%s", url, tailFile(logPath, 60))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// ephemeralPort is a TCP port on 127.0.0.1 the kernel picked as free just now.
func ephemeralPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// staticPod is a pod the test put in the kubelet's manifest directory.
type staticPod struct {
	name, handler, manifest string
}

// addWebPod writes the manifest of the two-container pod: "server", busybox
// httpd on :8080 serving a token of its own (made anew at each start)
// with an exec liveness probe on /tmp/healthy and a 64Mi memory limit, and
// "client", which fetches localhost:8080 every second and prints what it
// got. On handler "gondolin" the pod carries the untrusted-workload
// annotation; on "runc" it gets containerd's default runtime.
func (n *kubeletNode) addWebPod(t *testing.T, handler string) *staticPod {
	t.Helper()
	p := &staticPod{name: "web-" + handler + "-" + randomHex(t, 3), handler: handler}
	annotations := map[string]string{}
	if handler == "gondolin" {
		annotations["io.kubernetes.cri.untrusted-workload"] = "true"
	}
	image := testImage(t)
	p.manifest = writeJSON(t, n.manifests, p.name+".json", map[string]any{
		"apiVersion": "v1",
		"kind":       "Pod",
		"metadata":   map[string]any{"name": p.name, "namespace": "gondolin-test", "annotations": annotations},
		"spec": map[string]any{
			"terminationGracePeriodSeconds": 5,
			"containers": []any{
				map[string]any{
					"name": "server", "image": image, "imagePullPolicy": "Never",
					"command": []string{"sh", "-c", "mkdir -p /www && echo \"token $(cat /proc/sys/kernel/random/uuid)\" >/www/index.html && " +
						"touch /tmp/healthy && exec httpd -f -p 8080 -h /www"},
					// The probe's exec runs in the VM: under TCG it can take
					// longer than the default timeout of 1s.
					"livenessProbe": map[string]any{
						"exec":           map[string]any{"command": []string{"cat", "/tmp/healthy"}},
						"periodSeconds":  2,
						"timeoutSeconds": 10, "failureThreshold": 2,
					},
					"resources": map[string]any{"limits": map[string]string{"memory": "64Mi"}},
				},
				map[string]any{
					"name": "client", "image": image, "imagePullPolicy": "Never",
					"command": []string{"sh", "-c", "while :; do echo \"got: $(wget -qO- http://localhost:8080/ 2>&1)\"; sleep 1; done"},
				},
			},
		},
	})
	return p
}

// sandbox waits for the pod's ready sandbox and returns its id.
func (p *staticPod) sandbox(t *testing.T) string {
	t.Helper()
	var out string
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		// A static pod is named <name>-<node name>.
		out = crictlOK(t, "pods", "--namespace", "gondolin-test", "--name", "^"+p.name+"-", "--state", "ready", "-q")
		if ids := strings.Fields(out); len(ids) == 1 {
			return ids[0]
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("pod %s: no one ready sandbox after 3 minutes: %q", p.name, out)
	return ""
}

// criContainer is what crictl ps -o json says of a container.
type criContainer struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Metadata struct {
		Name    string `json:"name"`
		Attempt int    `json:"attempt"`
	} `json:"metadata"`
}

// containersOf lists the containers, of any state, of sandbox.
func containersOf(t *testing.T, sandbox string) []criContainer {
	t.Helper()
	var out struct {
		Containers []criContainer `json:"containers"`
	}
	if err := json.Unmarshal([]byte(crictlOK(t, "ps", "-a", "--pod", sandbox, "-o", "json")), &out); err != nil {
		t.Fatalf("crictl ps -o json: %v", err)
	}
	return out.Containers
}

// running waits for the running container name of sandbox at attempt (the
// kubelet's restart count) and returns its id.
func running(t *testing.T, sandbox, name string, attempt int) string {
	t.Helper()
	var seen []criContainer
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		seen = containersOf(t, sandbox)
		for _, c := range seen {
			if c.Metadata.Name == name && c.Metadata.Attempt == attempt && c.State == "CONTAINER_RUNNING" {
				return c.ID
			}
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("no running container %s at attempt %d in pod %s after 3 minutes: %+v", name, attempt, sandbox, seen)
	return ""
}

// podInfo is what crictl inspectp says of a sandbox: its pod's uid and
// its network namespace.
func podInfo(t *testing.T, sandbox string) (uid, netns string) {
	t.Helper()
	var out struct {
		Status struct {
			Labels map[string]string `json:"labels"`
		} `json:"status"`
		Info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct {
						Type string `json:"type"`
						Path string `json:"path"`
					} `json:"namespaces"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(crictlOK(t, "inspectp", "-o", "json", sandbox)), &out); err != nil {
		t.Fatalf("crictl inspectp: %v", err)
	}
	for _, ns := range out.Info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			netns = ns.Path
		}
	}
	uid = out.Status.Labels["io.kubernetes.pod.uid"]
	if uid == "" || netns == "" {
		t.Fatalf("crictl inspectp %s: no pod uid (%q) or network namespace (%q)", sandbox, uid, netns)
	}
	return uid, netns
}

// The same two-container static pod, on gondolin (through the untrusted
// runtime) and on runc side by side under one standalone kubelet: its
// containers talk over localhost, the liveness probe restarts the server
// once its health file is gone, the memory limit is the container's cgroup
// limit, and on gondolin the pod is one VM all along. Removing the
// manifests removes the pods and leaves nothing: no VMM, file server,
// mount, network namespace, state directory or pod cgroup.
// serverToken is the token a web pod's server container wrote into its
// index.html: its command writes it as it starts, which may be just after
// the CRI reports the container running (a restarted server under load).
func serverToken(t *testing.T, server string) string {
	t.Helper()
	var res result
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if res = crictl(t, "exec", server, "cat", "/www/index.html"); res.code == 0 {
			return strings.TrimSpace(res.stdout)
		}
	}
	t.Fatalf("the server %s wrote no /www/index.html within 30 s: %s", server, res)
	return ""
}

func TestKubeletStaticPods(t *testing.T) {
	node := startKubeletNode(t)
	handlers := []string{"gondolin", "runc"}
	pods := map[string]*staticPod{}
	for _, h := range handlers {
		pods[h] = node.addWebPod(t, h)
	}
	type made struct{ sandbox, uid, netns string }
	seen := map[string]*made{}
	containers := map[string][]string{}
	for _, h := range handlers {
		t.Run(h, func(t *testing.T) {
			p := pods[h]
			m := &made{sandbox: p.sandbox(t)}
			seen[h] = m
			m.uid, m.netns = podInfo(t, m.sandbox)
			server := running(t, m.sandbox, "server", 0)
			client := running(t, m.sandbox, "client", 0)
			containers[h] = append(containers[h], server, client)

			token := serverToken(t, server)
			waitLog(t, client, "got: "+token)
			t.Logf("pod %s: sandbox %s, server %s, client %s; the client got %q", p.name, m.sandbox, server, client, token)
			if h == "gondolin" {
				assertOnePodVM(t, m.sandbox, server, client)
			} else if procs := podProcesses(m.sandbox); len(procs) > 0 {
				t.Errorf("the runc pod has gondolin processes: %v", procs)
			}

			limit, file := "67108864", "/sys/fs/cgroup/memory.max" // the guest's cgroup v2
			if h == "runc" {
				file = "/sys/fs/cgroup/memory/memory.limit_in_bytes" // this host's cgroup v1
			}
			if got := crictlOK(t, "exec", server, "cat", file); got != limit {
				t.Errorf("the server's %s is %q, want the 64Mi limit, %s", file, got, limit)
			}

			// Two failed probes (2 s apart) and the kubelet restarts the
			// server; the client reaches the new one over localhost.
			crictlOK(t, "exec", server, "rm", "/tmp/healthy")
			restarted := running(t, m.sandbox, "server", 1)
			containers[h] = append(containers[h], restarted)
			token2 := serverToken(t, restarted)
			if token2 == token {
				t.Errorf("the restarted server serves the old token %q", token)
			}
			waitLog(t, client, "got: "+token2)
			t.Logf("the liveness probe restarted the server: %s at attempt 1; the client got %q", restarted, token2)
			for _, c := range containersOf(t, m.sandbox) {
				if c.Metadata.Name == "client" && c.Metadata.Attempt != 0 {
					t.Errorf("the client restarted too: %+v", c)
				}
			}
			if got := crictlOK(t, "exec", restarted, "cat", file); got != limit {
				t.Errorf("the restarted server's %s is %q, want %s", file, got, limit)
			}
			if h == "gondolin" {
				assertOnePodVM(t, m.sandbox, restarted, client)
			}
		})
	}

	// The manifests go: the kubelet stops the pods, and its garbage
	// collection (each minute) removes their containers and sandboxes.
	for _, h := range handlers {
		if err := os.Remove(pods[h].manifest); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range handlers {
		m := seen[h]
		if m == nil {
			continue
		}
		start := time.Now()
		deadline := start.Add(4 * time.Minute)
		for {
			left := crictlOK(t, "pods", "--name", "^"+pods[h].name+"-", "-q")
			if left == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the pod's sandbox %s is still there 4 minutes after its manifest went: %s", h, m.sandbox, crictlOK(t, "pods", "--name", "^"+pods[h].name+"-"))
			}
			time.Sleep(2 * time.Second)
		}
		t.Logf("%s: the pod's sandbox was removed %v after its manifest", h, time.Since(start).Round(time.Second))
		if h == "gondolin" {
			for _, id := range append([]string{m.sandbox}, containers[h]...) {
				assertNoLeftoversIn(t, criNamespace, id)
			}
		}
		if _, err := os.Stat(m.netns); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: the pod's network namespace %s is still there (%v)", h, m.netns, err)
		}
		// The kubelet removes the pod's cgroup once it is empty; a cgroup
		// the runtime left below it would keep it.
		podCgroup := filepath.Join("/sys/fs/cgroup/memory", node.cgroupRoot, "kubepods", "burstable", "pod"+m.uid)
		if !waitGone(podCgroup, time.Minute) {
			entries, _ := os.ReadDir(podCgroup)
			var sub []string
			for _, e := range entries {
				if e.IsDir() {
					sub = append(sub, e.Name())
				}
			}
			t.Errorf("%s: the pod's cgroup %s is still there a minute after the pod went; cgroups in it: %v", h, podCgroup, sub)
		}
	}
}

// waitGone waits up to d for path not to exist.
func waitGone(path string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Second)
	}
}
