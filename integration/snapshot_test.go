//go:build integration

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// snapshotBootConfig is a runtime config that resumes VMs from snapshots
// kept in a directory of the test's own: QEMU 10 (make tools unpacks
// Debian's bookworm-backports build into the tools directory) and the Rust
// virtiofsd (make tools builds it), the only pair here that can save and
// load a VM with a virtio-fs device.
func snapshotBootConfig(t *testing.T, u *upstream) (cfg, snapDir string) {
	t.Helper()
	virtiofsd := rustVirtiofsd(t)
	qemu := filepath.Join(filepath.Dir(virtiofsd), "..", "qemu", "usr", "bin", "qemu-system-x86_64")
	if _, err := os.Stat(qemu); err != nil {
		t.Fatalf("QEMU 10 is not unpacked in the tools directory (make tools): %v", err)
	}
	snapDir = t.TempDir()
	cfg, _ = runtimeConfig(t, u, fmt.Sprintf("qemu_path = %q\nvirtiofsd_path = %q\nsnapshot_boot = true\nsnapshot_dir = %q", qemu, virtiofsd, snapDir))
	return cfg, snapDir
}

// The snapshot boot path: the first container saves a snapshot of a VM of
// its shape, booted once, and resumes from it; later ones resume from the
// same file. A resumed guest runs a container like a booted one (rootfs
// write, pipelines, the egress policy, an exec's exit code), has the host's
// time rather than the snapshot's, draws random numbers of its own rather
// than its siblings', and never booted (its console has no agent start).
func TestSnapshotBoot(t *testing.T) {
	u := startUpstream(t)
	cfg, snapDir := snapshotBootConfig(t, u)
	url := fmt.Sprintf("https://api.x.test:%d/hello", u.port)
	res, _ := egressRun(t, cfg, []string{fmt.Sprintf("io.gondolin.net.allow=api.x.test:%d", u.port)}, nil,
		`set -e; uname -r; echo rootfs-ok > /written; cat /written
		for i in 1 2 3 4 5; do echo x | cat >/dev/null; ls / | wc -l >/dev/null; done; echo pipes-ok
		curl -fsS `+url)
	if res.code != 0 || !strings.Contains(res.stdout, "-gondolin\n") || !strings.Contains(res.stdout, "rootfs-ok") ||
		!strings.Contains(res.stdout, "pipes-ok") || !strings.Contains(res.stdout, "hello from api.x.test") {
		t.Fatalf("container resumed from a new snapshot: %s", res)
	}
	if states, _ := filepath.Glob(filepath.Join(snapDir, "*.state")); len(states) != 1 {
		t.Fatalf("want one saved VM state in %s, found %v", snapDir, states)
	}

	// Let the snapshot's clock fall behind the host's.
	time.Sleep(3 * time.Second)
	randoms := map[string]string{}
	for i := 0; i < 2; i++ {
		id := startDetached(t, []string{"--runtime-config-path", cfg}, "sleep", "1000")
		res := ctr(t, nil, "task", "exec", "--exec-id", "t", id, "sh", "-c", "date +%s; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'")
		lines := strings.Fields(res.stdout)
		if res.code != 0 || len(lines) != 2 {
			t.Fatalf("exec in resumed VM: %s", res)
		}
		guest, err := strconv.ParseInt(lines[0], 10, 64)
		if err != nil {
			t.Fatalf("guest date: %s", res)
		}
		if d := time.Now().Unix() - guest; d < -2 || d > 2 {
			t.Errorf("resumed guest's clock is %d s off the host's", d)
		}
		if other, ok := randoms[lines[1]]; ok {
			t.Errorf("containers %s and %s read the same random bytes %s from /dev/urandom", other, id, lines[1])
		}
		randoms[lines[1]] = id
		console := filepath.Join(os.Getenv("GONDOLIN_CONTAINERD_STATE"), "io.containerd.runtime.v2.task", namespace(), id, "console.log")
		b, err := os.ReadFile(console)
		if err != nil || !strings.Contains(string(b), "host connected") || strings.Contains(string(b), "gondolin-agent: starting") ||
			!strings.Contains(string(b), "resumed from a VM snapshot: clock set") || !strings.Contains(string(b), ", prestarted init ") {
			t.Errorf("console of a resumed VM (%v): want the agent's host connection, its clock and entropy from the host, no boot, and the container's init prestarted in the snapshot:\n%s", err, b)
		}
		if res := ctr(t, nil, "task", "exec", "--exec-id", "e", id, "sh", "-c", "exit 5"); res.code != 5 {
			t.Errorf("exec exit code in resumed VM: %s", res)
		}
	}
}

// With snapshot_boot at its default (auto), a QEMU and virtiofsd that can
// save a VM make and use snapshots. A saved state no VM can resume from
// again, because a file its key was made from changed (an upgraded
// virtiofsd here), is removed when the next snapshot is made; states of
// files that did not change stay.
func TestSnapshotPrune(t *testing.T) {
	u := startUpstream(t)
	virtiofsd := rustVirtiofsd(t)
	qemu := filepath.Join(filepath.Dir(virtiofsd), "..", "qemu", "usr", "bin", "qemu-system-x86_64")
	snapDir := t.TempDir()
	// Two VMMs: the tools directory's, and a copy of its virtiofsd that is
	// then "upgraded".
	copied := filepath.Join(t.TempDir(), "virtiofsd")
	if res := command(t, nil, "cp", virtiofsd, copied); res.code != 0 {
		t.Fatalf("copy virtiofsd: %s", res)
	}
	// snapshot_boot is left at its default, auto: with QEMU 10 and the
	// Rust virtiofsd that is snapshot boot.
	config := func(fsd string) string {
		// No VM pool: its VMs (a pod share's shape) would save states of
		// their own into snapDir while the test counts them.
		cfg, _ := runtimeConfig(t, u, fmt.Sprintf("qemu_path = %q\nvirtiofsd_path = %q\nsnapshot_dir = %q\nvm_pool_size = 0", qemu, fsd, snapDir))
		return cfg
	}
	kept, upgraded := config(virtiofsd), config(copied)
	states := func() []string {
		s, _ := filepath.Glob(filepath.Join(snapDir, "*.state"))
		return s
	}
	for _, cfg := range []string{kept, upgraded} {
		if res := run(t, nil, []string{"--runtime-config-path", cfg}, "true"); res.code != 0 {
			t.Fatalf("container with %s: %s", cfg, res)
		}
	}
	before := states()
	if len(before) != 2 {
		t.Fatalf("want a saved state per virtiofsd, found %v", before)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(copied, later, later); err != nil {
		t.Fatal(err)
	}
	if res := run(t, nil, []string{"--runtime-config-path", upgraded}, "true"); res.code != 0 {
		t.Fatalf("container after the upgrade: %s", res)
	}
	after := states()
	if len(after) != 2 {
		t.Fatalf("after the upgrade: want the kept state and a new one, found %v (before: %v)", after, before)
	}
	common := 0
	for _, s := range after {
		if slices.Contains(before, s) {
			common++
		}
	}
	if common != 1 {
		t.Errorf("want exactly the untouched virtiofsd's state kept: before %v, after %v", before, after)
	}
	if leftover, _ := filepath.Glob(filepath.Join(snapDir, "*.error")); len(leftover) != 0 {
		t.Errorf("snapshot errors: %v", leftover)
	}
	if inputs, _ := filepath.Glob(filepath.Join(snapDir, "*.inputs")); len(inputs) != 2 {
		t.Errorf("want an inputs file per saved state, found %v", inputs)
	}
}
