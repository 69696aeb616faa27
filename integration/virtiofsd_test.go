//go:build integration

package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	gruntime "github.com/earendil-works/gondolin-containerd/runtime"
)

// rustVirtiofsd is the Rust virtiofsd `make tools` builds into the tools
// directory on PATH (hack/build-tools.sh virtiofsd).
func rustVirtiofsd(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("virtiofsd")
	if err != nil {
		t.Fatalf("the Rust virtiofsd is not on PATH (make tools builds it into .cache/tools/bin): %v", err)
	}
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "virtiofsd 1.") {
		t.Fatalf("%s is not the Rust virtiofsd: %v: %s", path, err, out)
	}
	return path
}

// virtiofsd_path may name the Rust virtiofsd (QEMU 8 dropped the C one): the
// shim recognises it and passes its options in its own syntax. The
// container's root and a bind mount both go through it: writes, a delete of
// an image file (an overlay whiteout on the host), a rename, a directory
// tree removed, and the bind's files seen on both sides.
func TestRustVirtiofsd(t *testing.T) {
	binary := rustVirtiofsd(t)
	cfg := filepath.Join(t.TempDir(), "gondolin.toml")
	// The system's QEMU (Debian 12's 7.2, too old to save a VM), not the
	// one beside the shim; snapshot_boot is left at auto: with the Rust
	// virtiofsd it asks QEMU once, and boots.
	snapDir := t.TempDir()
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("qemu_path = \"qemu-system-x86_64\"\nvirtiofsd_path = %q\nsnapshot_dir = %q\n", binary, snapDir)), 0o644); err != nil {
		t.Fatal(err)
	}
	bind := t.TempDir()
	if err := os.WriteFile(filepath.Join(bind, "from-host"), []byte("host data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := startDetached(t, []string{"--runtime-config-path", cfg,
		"--mount", "type=bind,src=" + bind + ",dst=/data,options=rbind:rw"}, "sleep", "1000")

	// Both file servers of this container (rootfs and binds) are the Rust
	// one. Each is two processes in its namespace sandbox: the one the
	// shim started, and its child serving in new PID and mount namespaces.
	stateDir := gruntime.StateDir(gruntime.DefaultStateRoot, namespace(), id)
	parentOf := map[string]string{}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(stateDir)) || !strings.Contains(string(b), "--shared-dir=") {
			continue
		}
		pid := filepath.Base(filepath.Dir(p))
		if exe, _ := os.Readlink(filepath.Join(filepath.Dir(p), "exe")); exe != binary {
			t.Errorf("file server %s runs %s, want %s", pid, exe, binary)
		}
		if st, err := os.ReadFile(filepath.Join(filepath.Dir(p), "stat")); err == nil {
			if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:])); len(f) > 1 {
				parentOf[pid] = f[1]
			}
		}
	}
	ownPIDNS, _ := os.Readlink("/proc/self/ns/pid")
	var servers []string
	for pid, ppid := range parentOf {
		if _, child := parentOf[ppid]; !child {
			servers = append(servers, pid)
		} else if ns, _ := os.Readlink("/proc/" + pid + "/ns/pid"); ns == ownPIDNS {
			t.Errorf("virtiofsd %s serves in the host's PID namespace (want --sandbox=namespace)", pid)
		}
	}
	if len(servers) != 2 {
		t.Fatalf("want 2 Rust virtiofsd servers (rootfs and binds) for %s, found %v", id, servers)
	}

	script := `set -e
echo new > /new-file; cat /new-file
rm /bin/ls; test ! -e /bin/ls && echo deleted
mv /new-file /renamed; cat /renamed
mkdir -p /tree/a/b; touch /tree/a/b/f; rm -rf /tree; test ! -e /tree && echo tree-gone
cat /data/from-host; echo guest data > /data/from-guest`
	res := ctr(t, nil, "task", "exec", "--exec-id", "fs", id, "sh", "-c", script)
	if res.code != 0 {
		t.Fatalf("file operations: %s", res)
	}
	for _, want := range []string{"new\n", "deleted\n", "tree-gone\n", "host data\n"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("output lacks %q: %s", want, res)
		}
	}
	if b, err := os.ReadFile(filepath.Join(bind, "from-guest")); err != nil || string(b) != "guest data\n" {
		t.Errorf("the guest's write to the bind mount: %q, %v", b, err)
	}
	unsupported, _ := filepath.Glob(filepath.Join(snapDir, "*.unsupported"))
	states, _ := filepath.Glob(filepath.Join(snapDir, "*.state"))
	// One answer per VM shape: the container's, and the VM pool's (a
	// pod share) if the pool started a VM meanwhile.
	if len(unsupported) < 1 || len(unsupported) > 2 || len(states) != 0 {
		t.Errorf("snapshot_boot = auto with QEMU 7.2: want QEMU's answer recorded and no state, found %v %v", unsupported, states)
	}
	for _, f := range unsupported {
		if b, _ := os.ReadFile(f); !strings.Contains(string(b), "needs QEMU 9.0 or later") {
			t.Errorf("%s: %s", f, b)
		}
	}
}
