//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// checkLines maps each item of gondolin check's report to its status and
// summary.
func checkLines(t *testing.T, out string) map[string][2]string {
	t.Helper()
	items := map[string][2]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		switch f[0] {
		case "ok", "warn", "fail", "info":
			items[f[1]] = [2]string{f[0], strings.Join(f[2:], " ")}
		}
	}
	return items
}

// gondolin check on the dev environment: with a config naming its QEMU 10
// and Rust virtiofsd, the shim's binaries and the guest image are found
// and fit, snapshots are possible, the private containerd and dockerd
// have the runtime, and the host can run a container (status 0). A config
// naming a kernel that is not there makes it fail (status 1), naming it.
func TestCLICheck(t *testing.T) {
	bin := buildGondolinCLI(t)
	virtiofsd := rustVirtiofsd(t)
	qemu := filepath.Join(filepath.Dir(virtiofsd), "..", "qemu", "usr", "bin", "qemu-system-x86_64")
	if _, err := os.Stat(qemu); err != nil {
		t.Fatalf("QEMU 10 is not unpacked in the tools directory (make tools): %v", err)
	}
	devDir, err := filepath.Abs(filepath.Join("..", ".cache", "dev"))
	if err != nil {
		t.Fatal(err)
	}
	daemons := []string{"--containerd-config", filepath.Join(devDir, "containerd.toml"), "--docker-config", filepath.Join(devDir, "daemon.json")}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("qemu_path = %q\nvirtiofsd_path = %q\nsnapshot_dir = %q\n", qemu, virtiofsd, filepath.Join(dir, "snapshots"))), 0o644); err != nil {
		t.Fatal(err)
	}

	res := command(t, nil, bin, append([]string{"check", "--config", cfg}, daemons...)...)
	t.Logf("gondolin check:\n%s", res.stdout)
	if res.code != 0 || res.stderr != "" || !strings.Contains(res.stdout, "This host can run gondolin containers.") {
		t.Fatalf("gondolin check: %s", res)
	}
	items := checkLines(t, res.stdout)
	for name, want := range map[string]string{
		"config":     cfg,
		"qemu":       "QEMU emulator version 10.",
		"virtiofsd":  "the Rust virtiofsd",
		"snapshots":  "VMs resume from saved states",
		"kernel":     "matches manifest.json",
		"initrd":     "matches manifest.json",
		"containerd": "registered as gondolin",
		"docker":     "registered in",
	} {
		if it := items[name]; it[0] != "ok" || !strings.Contains(it[1], want) {
			t.Errorf("%s: %q %q, want ok and %q", name, it[0], it[1], want)
		}
	}
	for _, name := range []string{"shim", "kvm", "vhost-vsock", "ca", "speed"} {
		if _, ok := items[name]; !ok {
			t.Errorf("no %s line", name)
		}
	}

	// The same as JSON.
	res = command(t, nil, bin, append([]string{"check", "--json", "--config", cfg}, daemons...)...)
	var rep struct {
		CanRun bool `json:"can_run"`
		Items  []struct{ Name, Status, Summary string }
	}
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil || res.code != 0 || !rep.CanRun || len(rep.Items) != len(items) {
		t.Fatalf("gondolin check --json (%v): %s", err, res)
	}

	// A kernel that is not there: no VM can boot.
	missing := filepath.Join(dir, "no-such-vmlinuz")
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte(fmt.Sprintf("qemu_path = %q\nvirtiofsd_path = %q\nkernel_path = %q\n", qemu, virtiofsd, missing)), 0o644); err != nil {
		t.Fatal(err)
	}
	res = command(t, nil, bin, append([]string{"check", "--config", bad}, daemons...)...)
	it := checkLines(t, res.stdout)["kernel"]
	if res.code != 1 || it[0] != "fail" || !strings.Contains(it[1], missing) || !strings.Contains(res.stderr, "kernel") ||
		!strings.Contains(res.stdout, "cannot run gondolin containers: fix kernel") {
		t.Fatalf("gondolin check with a missing kernel: kernel %q: %s", it, res)
	}
}
