//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The nerdctl tests drive the nerdctl that `make tools` builds against the
// dev containerd, as ctr does, with CNI networking through nerdctl's OCI
// hook and the CNI plugins `make tools` builds (GONDOLIN_CNI_BIN_DIR).
// Nothing of theirs is shared with another user of the host: each test has
// its own containerd namespace, nerdctl data root and CNI config directory
// (so nothing lands in /etc/cni), an empty nerdctl.toml, and a network of
// its own on a free subnet (never nerdctl's default bridge network, whose
// bridge and IPAM state would outlive the test).

// nerdctlRuntimes are the runtimes each nerdctl test runs under, side by
// side: the dev containerd finds both shims on its PATH.
var nerdctlRuntimes = []struct{ name, runtime string }{
	{"runc", "io.containerd.runc.v2"},
	{"gondolin", runtimeName},
}

// cniStateDir is where the CNI plugins keep their state: host-local's
// leases under networks/<network>, libcni's cached results under results/.
const cniStateDir = "/var/lib/cni"

// nerdctlEnv is one test's private nerdctl.
type nerdctlEnv struct {
	ns      string
	flags   []string // the global flags of every call
	netconf string   // --cni-netconfpath
	// network is the test's own network on subnet.
	network string
	subnet  netip.Prefix
	// What the test made, for the cleanup and the leftover check:
	// container IDs, networks with their bridges, published host ports.
	ids      map[string]bool
	networks map[string]string
	subnets  []netip.Prefix
	ports    []int
	images   []string
	// iptables is iptablesLines when the test began.
	iptables map[string]bool
}

// newNerdctl sets up a private nerdctl for the test: namespace, data root,
// CNI config directory, the test image loaded into the namespace, and a
// network on a free subnet. When the test ends, everything it made is
// removed (containers, networks, the CNI plugins' leftovers, the image and
// the namespace), and then checked to be gone.
func newNerdctl(t *testing.T) *nerdctlEnv {
	t.Helper()
	if _, err := exec.LookPath("nerdctl"); err != nil {
		t.Fatal("nerdctl is not on PATH: `make tools` builds it into .cache/tools/bin (source .cache/dev/env)")
	}
	cniBin := os.Getenv("GONDOLIN_CNI_BIN_DIR")
	if cniBin == "" {
		t.Fatal("GONDOLIN_CNI_BIN_DIR is not set: source .cache/dev/env after `make dev-up` (an env file written before dev-up knew it lacks it: export GONDOLIN_CNI_BIN_DIR=$PWD/.cache/tools/cni/bin)")
	}
	for _, p := range []string{"bridge", "host-local", "loopback", "portmap", "firewall", "tuning"} {
		if _, err := os.Stat(filepath.Join(cniBin, p)); err != nil {
			t.Fatalf("CNI plugin %s missing from GONDOLIN_CNI_BIN_DIR: run `make tools` (%v)", p, err)
		}
	}
	addr := os.Getenv("CONTAINERD_ADDRESS")
	if addr == "" {
		t.Fatal("CONTAINERD_ADDRESS is not set: source .cache/dev/env after `make dev-up`")
	}
	testImage(t)

	dir := t.TempDir()
	// nerdctl reads /etc/nerdctl/nerdctl.toml unless NERDCTL_TOML names
	// another file: an empty one keeps a host's settings out.
	toml := filepath.Join(dir, "nerdctl.toml")
	if err := os.WriteFile(toml, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NERDCTL_TOML", toml)
	e := &nerdctlEnv{
		ns:       "nerdctl-" + newID(t),
		netconf:  filepath.Join(dir, "net.d"),
		ids:      map[string]bool{},
		networks: map[string]string{},
		iptables: iptablesLines(t),
	}
	e.flags = []string{
		"--address", addr, "--namespace", e.ns, "--data-root", filepath.Join(dir, "data"),
		"--cni-path", cniBin, "--cni-netconfpath", e.netconf, "--cgroup-manager", "cgroupfs",
	}
	t.Cleanup(func() { e.cleanup(t) })
	e.load(t, "GONDOLIN_TEST_IMAGE")
	e.network = "net-" + newID(t)
	e.subnet = e.freeSubnet(t)
	e.must(t, "network", "create", "--subnet", e.subnet.String(), e.network)
	e.addNetwork(t, e.network)
	return e
}

// load loads the image the environment variable imageEnv names from the
// archive imageEnv_TAR names (.cache/dev/env) into the test's namespace.
func (e *nerdctlEnv) load(t *testing.T, imageEnv string) {
	t.Helper()
	image, tar := envImage(t, imageEnv), envImage(t, imageEnv+"_TAR")
	e.images = append(e.images, image)
	e.must(t, "load", "-i", tar)
}

// nerdctl runs nerdctl with the test's global flags.
func (e *nerdctlEnv) nerdctl(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	return command(t, stdin, "nerdctl", append(slices.Clone(e.flags), args...)...)
}

// must runs nerdctl and fails the test unless it succeeds; it returns the
// output.
func (e *nerdctlEnv) must(t *testing.T, args ...string) string {
	t.Helper()
	res := e.nerdctl(t, nil, args...)
	if res.code != 0 {
		t.Fatalf("nerdctl %s: %s", strings.Join(args, " "), res)
	}
	return res.stdout
}

// runArgs is `run FLAGS --runtime RUNTIME --network NETWORK` plus the
// test's flags, the test image and the command.
func (e *nerdctlEnv) runArgs(t *testing.T, runFlags []string, runtime string, flags []string, args []string) []string {
	full := slices.Concat([]string{"run"}, runFlags, []string{"--runtime", runtime, "--network", e.network}, flags)
	return slices.Concat(full, []string{testImage(t)}, args)
}

// run is a foreground `nerdctl run --rm`; the container's ID (from
// --cidfile) is kept for the leftover check.
func (e *nerdctlEnv) run(t *testing.T, runtime string, flags []string, args ...string) result {
	t.Helper()
	cidfile := filepath.Join(t.TempDir(), "cid")
	res := e.nerdctl(t, nil, e.runArgs(t, []string{"--rm", "--cidfile", cidfile}, runtime, flags, args)...)
	if b, err := os.ReadFile(cidfile); err == nil && len(b) > 0 {
		e.ids[strings.TrimSpace(string(b))] = true
	}
	return res
}

// runDetached is `nerdctl run -d`; the container is removed when the
// (sub)test ends.
func (e *nerdctlEnv) runDetached(t *testing.T, runtime string, flags []string, args ...string) string {
	t.Helper()
	res := e.nerdctl(t, nil, e.runArgs(t, []string{"-d"}, runtime, flags, args)...)
	if res.code != 0 {
		t.Fatalf("nerdctl run -d: %s", res)
	}
	id := strings.TrimSpace(res.stdout)
	e.ids[id] = true
	t.Cleanup(func() {
		if res := e.nerdctl(t, nil, "rm", "-f", id); res.code != 0 && !strings.Contains(res.stderr, "no such container") {
			t.Errorf("nerdctl rm -f %s: %s", id, res)
		}
	})
	return id
}

// inspect is `nerdctl inspect --format FORMAT ID`, trimmed.
func (e *nerdctlEnv) inspect(t *testing.T, id, format string) string {
	t.Helper()
	return strings.TrimSpace(e.must(t, "inspect", "--format", format, id))
}

// freeSubnet picks a 10.213.x.0/24 that no route or address of the host
// and no earlier network of the test uses.
func (e *nerdctlEnv) freeSubnet(t *testing.T) netip.Prefix {
	t.Helper()
	routes := command(t, nil, "ip", "-4", "route", "show", "table", "all").stdout + command(t, nil, "ip", "-4", "addr").stdout
	for _, x := range rand.Perm(254) {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 213, byte(x + 1), 0}), 24)
		if strings.Contains(routes, subnetText(p)) || slices.Contains(e.subnets, p) {
			continue
		}
		e.subnets = append(e.subnets, p)
		return p
	}
	t.Fatal("no free 10.213.x.0/24 subnet on this host")
	return netip.Prefix{}
}

// subnetText is the first three octets of a /24 with the dot: how its
// addresses start in routes and iptables rules.
func subnetText(p netip.Prefix) string {
	a := p.Addr().As4()
	return fmt.Sprintf("%d.%d.%d.", a[0], a[1], a[2])
}

// addNetwork records a network the test made (nerdctl network create,
// compose up), with its bridge from its CNI config, for the cleanup.
func (e *nerdctlEnv) addNetwork(t *testing.T, name string) {
	t.Helper()
	if br := e.bridgeOf(name); br != "" || e.networks[name] == "" {
		e.networks[name] = br
	}
}

// bridgeOf reads a network's bridge from the conflist nerdctl wrote for it
// (under a directory per namespace); "" if there is none.
func (e *nerdctlEnv) bridgeOf(name string) string {
	files, _ := filepath.Glob(filepath.Join(e.netconf, "*", "nerdctl-"+name+".conflist"))
	top, _ := filepath.Glob(filepath.Join(e.netconf, "nerdctl-"+name+".conflist"))
	for _, f := range append(files, top...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var conf struct {
			Plugins []struct {
				Type   string `json:"type"`
				Bridge string `json:"bridge"`
			} `json:"plugins"`
		}
		if json.Unmarshal(b, &conf) != nil {
			continue
		}
		for _, p := range conf.Plugins {
			if p.Type == "bridge" && p.Bridge != "" {
				return p.Bridge
			}
		}
	}
	return ""
}

// cleanup removes what the test made, whether it passed or not, and then
// checks that nothing of it is left.
func (e *nerdctlEnv) cleanup(t *testing.T) {
	t.Helper()
	// Containers a failed test left (the ones it removed itself are
	// already recorded).
	res := e.nerdctl(t, nil, "ps", "-a", "-q", "--no-trunc")
	if res.code != 0 {
		t.Errorf("nerdctl ps -a: %s", res)
	}
	for _, id := range strings.Fields(res.stdout) {
		e.ids[id] = true
		if res := e.nerdctl(t, nil, "rm", "-f", id); res.code != 0 {
			t.Errorf("nerdctl rm -f %s: %s", id, res)
		}
	}
	for name, br := range e.networks {
		if b := e.bridgeOf(name); b != "" {
			br, e.networks[name] = b, b
		}
		// compose down may have removed it already.
		if res := e.nerdctl(t, nil, "network", "rm", name); res.code != 0 && e.bridgeOf(name) != "" {
			t.Errorf("nerdctl network rm %s: %s", name, res)
		}
		e.removeCNILeftovers(t, name, br)
	}
	for _, image := range e.images {
		if res := e.nerdctl(t, nil, "rmi", "-f", image); res.code != 0 {
			t.Errorf("nerdctl rmi %s: %s", image, res)
		}
	}
	// The namespace can be removed once containerd's garbage collector has
	// removed the image's snapshots.
	deadline := time.Now().Add(20 * time.Second)
	for {
		res := e.nerdctl(t, nil, "namespace", "remove", e.ns)
		if res.code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("nerdctl namespace remove %s: %s", e.ns, res)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	e.assertClean(t)
}

// removeCNILeftovers removes what the CNI plugins keep of a network after
// nerdctl network rm, by design: the firewall plugin's per-bridge isolation
// rules (plugins/meta/firewall/ingresspolicy.go, teardownIngressPolicy: "we
// do not remove the iptable rules that are created per bridge") and
// host-local's directory of the network's leases.
func (e *nerdctlEnv) removeCNILeftovers(t *testing.T, network, bridge string) {
	t.Helper()
	if bridge != "" {
		for _, table := range []string{"filter", "nat"} {
			res := command(t, nil, "iptables-save", "-t", table)
			for _, line := range strings.Split(res.stdout, "\n") {
				if !strings.HasPrefix(line, "-A ") || !strings.Contains(line, " "+bridge+" ") {
					continue
				}
				// iptables-save quotes the rule as a shell would.
				del := "iptables -w -t " + table + " -D " + strings.TrimPrefix(line, "-A ")
				if res := command(t, nil, "sh", "-c", del); res.code != 0 {
					t.Errorf("%s: %s", del, res)
				}
			}
		}
	}
	if err := os.RemoveAll(filepath.Join(cniStateDir, "networks", network)); err != nil {
		t.Error(err)
	}
}

// assertClean checks that nothing of the test is left: no process, mount
// or state of its containers, no iptables rule naming its namespace,
// bridges, subnets or published ports, no CNI state, bridge or named
// network namespace.
func (e *nerdctlEnv) assertClean(t *testing.T) {
	t.Helper()
	for id := range e.ids {
		assertNoLeftoversIn(t, e.ns, id)
	}
	left, added := e.leftovers(t, 10*time.Second)
	if len(left) > 0 {
		t.Errorf("nerdctl test left behind:\n%s", strings.Join(left, "\n"))
		// Reported; now removed, so that the host stays clean for the
		// next test.
		e.purge(t)
		if left, _ := e.leftovers(t, 0); len(left) > 0 {
			t.Errorf("could not remove:\n%s", strings.Join(left, "\n"))
		}
	}
	if len(added) > 0 {
		// The CNI plugins make their chains (CNI-FORWARD, CNI-HOSTPORT-*,
		// CNI-ISOLATION-*) and the jumps to them once per host and keep
		// them for every later network; other users of the host (the CRI
		// tests) may have changed rules meanwhile. None of these names
		// anything of the test.
		slices.Sort(added)
		t.Logf("iptables rules added while the test ran, none naming it:\n%s", strings.Join(added, "\n"))
	}
}

// ours says an iptables rule names the test's namespace (CNI's comments
// carry "<namespace>-<container ID>"), bridges, subnets or host ports.
func (e *nerdctlEnv) ours(line string) bool {
	if strings.Contains(line, e.ns) {
		return true
	}
	for _, br := range e.networks {
		if br != "" && strings.Contains(line, br) {
			return true
		}
	}
	for _, p := range e.subnets {
		if strings.Contains(line, subnetText(p)) {
			return true
		}
	}
	for _, port := range e.ports {
		for _, f := range []string{"--dport %d", "--dports %d"} {
			if pat := fmt.Sprintf(f, port); strings.Contains(line, pat+" ") || strings.HasSuffix(line, pat) {
				return true
			}
		}
	}
	return false
}

// leftovers lists what of the test is still on the host (waiting up to
// within for it to go), and the iptables rules added since the test began
// that name nothing of it.
func (e *nerdctlEnv) leftovers(t *testing.T, within time.Duration) (left, added []string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		left, added = nil, nil
		lines := iptablesLines(t)
		// A chain one of the test's rules jumps to is the test's too.
		targets := map[string]bool{}
		for l := range lines {
			if m := cniJump.FindStringSubmatch(l); m != nil && e.ours(l) && !cniSharedChains.MatchString(m[1]) {
				targets[m[1]] = true
			}
		}
		for l := range lines {
			_, rule, _ := strings.Cut(l, ": ")
			chain, _, _ := strings.Cut(strings.TrimPrefix(rule, ":"), " ")
			switch {
			case e.ours(l) || strings.HasPrefix(rule, ":") && targets[chain]:
				left = append(left, "iptables rule: "+l)
			case !e.iptables[l]:
				added = append(added, l)
			}
		}
		for name, br := range e.networks {
			if _, err := os.Stat(filepath.Join(cniStateDir, "networks", name)); err == nil {
				left = append(left, "CNI IPAM state "+filepath.Join(cniStateDir, "networks", name))
			}
			if br != "" {
				if res := command(t, nil, "ip", "link", "show", br); res.code == 0 {
					left = append(left, "bridge: "+res.stdout)
				}
			}
		}
		results, _ := os.ReadDir(filepath.Join(cniStateDir, "results"))
		for _, r := range results {
			if strings.Contains(r.Name(), e.ns) {
				left = append(left, "CNI result "+filepath.Join(cniStateDir, "results", r.Name()))
			}
		}
		for _, l := range strings.Split(command(t, nil, "ip", "netns", "list").stdout, "\n") {
			named := l != "" && strings.Contains(l, e.ns)
			for id := range e.ids {
				named = named || l != "" && len(id) >= 12 && strings.Contains(l, id[:12])
			}
			if named {
				left = append(left, "network namespace: "+l)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left, added
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cniJump is the target of a rule that jumps to a chain of CNI's.
var cniJump = regexp.MustCompile(`-j (CNI-[A-Za-z0-9-]+)`)

// cniSharedChains are the chains the CNI plugins share among all networks
// and keep: never removed here.
var cniSharedChains = regexp.MustCompile(`^CNI-(FORWARD|ADMIN|ISOLATION-STAGE-[12]|HOSTPORT-(DNAT|SNAT|MASQ|SETMARK))$`)

// purge removes what a leak left of the test: the iptables rules naming
// it, the per-container chains they jumped to (the bridge plugin's
// CNI-<hash>, portmap's CNI-DN-<hash>), and libcni's cached results of its
// containers. It is for after a leak was reported: what a container's CNI
// DEL would have removed.
func (e *nerdctlEnv) purge(t *testing.T) {
	t.Helper()
	for _, table := range []string{"filter", "nat"} {
		chains := map[string]bool{}
		for _, line := range strings.Split(command(t, nil, "iptables-save", "-t", table).stdout, "\n") {
			if !strings.HasPrefix(line, "-A ") || !e.ours(line) {
				continue
			}
			if m := cniJump.FindStringSubmatch(line); m != nil && !cniSharedChains.MatchString(m[1]) {
				chains[m[1]] = true
			}
			// iptables-save quotes the rule as a shell would.
			del := "iptables -w -t " + table + " -D " + strings.TrimPrefix(line, "-A ")
			if res := command(t, nil, "sh", "-c", del); res.code != 0 {
				t.Errorf("%s: %s", del, res)
			}
		}
		for c := range chains {
			for _, op := range []string{"-F", "-X"} {
				if res := command(t, nil, "iptables", "-w", "-t", table, op, c); res.code != 0 {
					t.Errorf("iptables -t %s %s %s: %s", table, op, c, res)
				}
			}
		}
	}
	results, _ := os.ReadDir(filepath.Join(cniStateDir, "results"))
	for _, r := range results {
		if strings.Contains(r.Name(), e.ns) {
			if err := os.Remove(filepath.Join(cniStateDir, "results", r.Name())); err != nil {
				t.Error(err)
			}
		}
	}
}

// startPTYNerdctl runs nerdctl with the test's global flags in a real
// pseudo-terminal, as an interactive shell would (see ptyDocker, whose
// methods drive it).
func (e *nerdctlEnv) startPTYNerdctl(t *testing.T, rows, cols uint16, args ...string) *ptyDocker {
	t.Helper()
	return startPTYCommand(t, exec.Command("nerdctl", append(slices.Clone(e.flags), args...)...), rows, cols)
}
