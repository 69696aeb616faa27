//go:build integration

package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gruntime "github.com/earendil-works/gondolin-containerd/runtime"
)

// poolState is what the shim records of a container's VM (runtime/hoststate.go).
type poolState struct {
	QEMUPid int    `json:"qemu_pid"`
	VMDir   string `json:"vm_dir"`
}

func readPoolState(t *testing.T, id string) poolState {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(gruntime.StateDir(gruntime.DefaultStateRoot, namespace(), id), "state.json"))
	if err != nil {
		t.Fatalf("state of %s: %v", id, err)
	}
	var st poolState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// poolOf finds the VM pool serving the runtime config at cfg: its pid and
// socket, from its command line.
func poolOf(cfg string) (pid int, socket string) {
	pid = findProcess(func(args []string) bool {
		if len(args) < 2 || args[1] != gruntime.VMPoolCommand || argValue(args, "--config") != cfg {
			return false
		}
		socket = argValue(args, "--socket")
		return true
	})
	return pid, socket
}

// startPooled starts detached containers until one gets a VM from the pool
// (the first creates of a config start the pool and its first VM).
func startPooled(t *testing.T, flags []string, args ...string) (string, poolState) {
	t.Helper()
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); {
		id := startDetached(t, flags, args...)
		if st := readPoolState(t, id); st.VMDir != "" {
			return id, st
		}
		time.Sleep(2 * time.Second)
	}
	t.Fatal("no container got a VM from the pool within 90 s")
	return "", poolState{}
}

// TestVMPool: containers of a config with vm_pool_size take VMs a pool
// process started and warmed up, each VM once; the VM becomes the
// container's (its namespace, cgroup, console; cleaned up with it), lives
// on when the pool dies, and a pool that died leaves nothing idle behind
// once the next one starts.
func TestVMPool(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "pool.toml")
	// vm_pool_idle makes the config, and so the pool, this test's own.
	if err := os.WriteFile(cfg, []byte("vm_pool_size = 1\nvm_pool_idle = \"17m\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--runtime-config-path", cfg}
	b, bst := startPooled(t, flags, "sh", "-c", "echo b >/marker; sleep 300")
	pool, socket := poolOf(cfg)
	if pool == 0 {
		t.Fatal("no VM pool process serves the test's config")
	}
	if st, err := os.Stat(socket); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("pool socket %s: %v, %v; want mode 0600", socket, st, err)
	}
	poolDir := strings.TrimSuffix(socket, ".sock")
	if filepath.Dir(bst.VMDir) != poolDir {
		t.Fatalf("B's VM came from %s, not from the test's pool %s", bst.VMDir, poolDir)
	}
	if _, err := os.Stat(bst.VMDir); !os.IsNotExist(err) {
		t.Fatalf("B's VM directory is still in the pool: %v", err)
	}
	// The VM is B's: its VMM's network namespace is the one B's state
	// pins, its VMM is in B's cgroup, and it runs B.
	stateDir := gruntime.StateDir(gruntime.DefaultStateRoot, namespace(), b)
	var pin, vmmNS syscall.Stat_t
	if err := syscall.Stat(filepath.Join(stateDir, "netns"), &pin); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepathJoinProc(bst.QEMUPid, "ns/net"), &vmmNS); err != nil {
		t.Fatal(err)
	}
	if pin.Ino != vmmNS.Ino {
		t.Fatalf("B's pinned network namespace (inode %d) is not its VMM's (%d)", pin.Ino, vmmNS.Ino)
	}
	if cg, err := os.ReadFile(filepathJoinProc(bst.QEMUPid, "cgroup")); err != nil || !strings.Contains(string(cg), b) {
		t.Fatalf("B's VMM is not in B's cgroup: %q, %v", cg, err)
	}
	if res := ctr(t, nil, "task", "exec", "--exec-id", "x", b, "cat", "/marker"); res.code != 0 || strings.TrimSpace(res.stdout) != "b" {
		t.Fatalf("exec in B: %s", res)
	}
	// C gets another VM: never B's, and not B's files.
	c, cst := startPooled(t, flags, "sleep", "300")
	if cst.VMDir == bst.VMDir || cst.QEMUPid == bst.QEMUPid {
		t.Fatalf("C got B's VM (%s, pid %d)", cst.VMDir, cst.QEMUPid)
	}
	if res := ctr(t, nil, "task", "exec", "--exec-id", "x", c, "cat", "/marker"); res.code == 0 {
		t.Fatalf("C sees B's /marker: %s", res)
	}

	// The pool dies: the VMs it handed over live on; its idle VM is the
	// next pool's to stop.
	idle, _ := filepath.Glob(filepath.Join(poolDir, "vm-*"))
	if err := syscall.Kill(pool, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if res := ctr(t, nil, "task", "exec", "--exec-id", "y", b, "cat", "/marker"); res.code != 0 {
		t.Fatalf("exec in B after its pool died: %s", res)
	}
	run(t, nil, flags, "true") // finds no pool: starts the next
	deadline := time.Now().Add(60 * time.Second)
	for _, d := range idle {
		for len(pidsOf(d+"/")) > 0 && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if pids := pidsOf(d + "/"); len(pids) > 0 {
			t.Errorf("the dead pool's idle VM %s still runs (pids %v) after the next pool started", d, pids)
		}
	}

	// B is cleaned up as any container: its VM goes with its task, though
	// no process of it names B.
	ctr(t, nil, "task", "kill", "-s", "SIGKILL", b)
	waitStatus(t, b, "STOPPED", "B killed")
	if res := ctr(t, nil, "task", "delete", b); res.code != 0 {
		t.Fatalf("delete B: %s", res)
	}
	for deadline := time.Now().Add(10 * time.Second); len(pidsOf(bst.VMDir+"/")) > 0 && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
	}
	if pids := pidsOf(bst.VMDir + "/"); len(pids) > 0 {
		t.Errorf("B's VM processes %v outlived its task", pids)
	}

	// The pool stops: its idle VMs and directory go with it.
	next, _ := poolOf(cfg)
	if next == 0 {
		t.Fatal("no new pool was started for the test's config")
	}
	if err := syscall.Kill(next, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if p, _ := poolOf(cfg); p == 0 {
			break
		}
	}
	if p, _ := poolOf(cfg); p != 0 {
		t.Fatalf("the pool (pid %d) did not exit on SIGTERM", p)
	}
	if left, _ := filepath.Glob(filepath.Join(poolDir, "vm-*")); len(left) > 0 {
		t.Errorf("the stopped pool left VM directories: %v", left)
	}
	if pids := pidsOf(poolDir + "/vm-"); len(pids) > 0 {
		// Only C's VM, which is C's, may still name the pool's directory.
		for _, p := range pids {
			if p != cst.QEMUPid && !strings.Contains(readCmdline(p), filepath.Base(cst.VMDir)) {
				t.Errorf("process %d of the stopped pool's VMs still runs: %s", p, readCmdline(p))
			}
		}
	}
}

// TestVMPoolOff: vm_pool_size = 0 starts no pool and gives every container
// a VM of its own.
func TestVMPoolOff(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "nopool.toml")
	if err := os.WriteFile(cfg, []byte("vm_pool_size = 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		id := startDetached(t, []string{"--runtime-config-path", cfg}, "sleep", "60")
		if st := readPoolState(t, id); st.VMDir != "" {
			t.Fatalf("container %s got a pool VM (%s) with vm_pool_size = 0", id, st.VMDir)
		}
	}
	if p, _ := poolOf(cfg); p != 0 {
		t.Fatalf("a VM pool (pid %d) was started for a config with vm_pool_size = 0", p)
	}
}

func filepathJoinProc(pid int, name string) string {
	return filepath.Join("/proc", strconv.Itoa(pid), name)
}

func readCmdline(pid int) string {
	b, _ := os.ReadFile(filepathJoinProc(pid, "cmdline"))
	return strings.ReplaceAll(string(b), "\x00", " ")
}
