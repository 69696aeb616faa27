package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/internal/mounttest"
	"github.com/earendil-works/gondolin-containerd/oci"
)

// Every record is in the state file before the caller acts on it, and the
// file reads back as the record.
func TestHostStateRecordsBeforeActing(t *testing.T) {
	root := t.TempDir()
	h, err := newHostState(context.Background(), root, "ns", "c", "/bundle")
	if err != nil {
		t.Fatal(err)
	}
	read := func() persistedState {
		t.Helper()
		back, err := loadHostState(h.dir)
		if err != nil {
			t.Fatal(err)
		}
		return back.rec
	}
	if got := read(); got.Bundle != "/bundle" {
		t.Fatalf("a new state file = %+v", got)
	}
	if err := h.recordRootfs("/bundle/rootfs"); err != nil {
		t.Fatal(err)
	}
	ro, err := h.recordReadonlyRoot()
	if err != nil {
		t.Fatal(err)
	}
	binds, err := h.recordBinds()
	if err != nil {
		t.Fatal(err)
	}
	pin, err := h.recordNetNSPin()
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{h.recordHostCgroup("/ns/c"), h.recordFileServers([]int{11, 12}), h.recordVMM(10)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	want := persistedState{
		Bundle: "/bundle", RootfsMounted: "/bundle/rootfs",
		ReadonlyRoot: filepath.Join(h.dir, readonlyRootName), BindsDir: filepath.Join(h.dir, bindsName),
		NetNSPin: filepath.Join(h.dir, netNSPinName), HostCgroup: "/ns/c", VMMPid: 10, VirtiofsdPids: []int{11, 12},
	}
	if ro != want.ReadonlyRoot || binds != want.BindsDir || pin != want.NetNSPin {
		t.Errorf("paths given out: %s %s %s", ro, binds, pin)
	}
	if got := read(); !reflect.DeepEqual(got, want) {
		t.Errorf("state file = %+v, want %+v", got, want)
	}
	if names, _ := filepath.Glob(filepath.Join(h.dir, "*"+stateFile+"*")); len(names) != 1 {
		t.Errorf("files beside the state file: %v", names)
	}
}

// A state file written by the previous shim version (the same JSON names,
// its own temporary file beside it) is still cleaned up: its VMM killed,
// the rootfs unmounted, the namespace unpinned, the shares detached, and
// the directory removed.
func TestCleanupPreviousVersionStateFile(t *testing.T) {
	mounttest.Need(t)
	root := t.TempDir()
	dir := makeStateDir(t, root)
	rootfs := filepath.Join(t.TempDir(), "bundle", "rootfs")
	mounttest.Tmpfs(t, rootfs)
	pin := filepath.Join(dir, netNSPinName)
	if err := os.WriteFile(pin, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(pin, pin, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(pin, unix.MNT_DETACH) })
	src := t.TempDir()
	if err := prepareBinds(filepath.Join(dir, bindsName), []oci.HostBind{{Name: "0", Source: src}}); err != nil {
		t.Fatal(err)
	}
	if _, err := prepareReadonlyRoot(filepath.Join(dir, readonlyRootName), t.TempDir()); err != nil {
		t.Fatal(err)
	}
	// A VMM stand-in whose command line names the state directory.
	vmm := exec.Command("sh", "-c", "read x", dir)
	stdin, err := vmm.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	if err := vmm.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- vmm.Wait() }()
	old := fmt.Sprintf(`{"bundle":"/b","rootfs_mounted":%q,"binds_dir":%q,"readonly_root":%q,"netns_pin":%q,"qemu_pid":%d,"virtiofsd_pids":[0]}`,
		rootfs, filepath.Join(dir, bindsName), filepath.Join(dir, readonlyRootName), pin, vmm.Process.Pid)
	if !json.Valid([]byte(old)) {
		t.Fatal("test state file is not JSON")
	}
	for name, b := range map[string]string{stateFile: old, stateFile + ".tmp": old} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := Cleanup(context.Background(), root, "ns", "c"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Error("the recorded VMM was not killed")
	}
	if mounttest.Mounted(t, rootfs) {
		t.Error("rootfs left mounted")
	}
	mounttest.NoneBelow(t, root)
	assertGone(t, dir, "state directory")
}

// A share that cannot be detached keeps the state directory, whose removal
// would go through it, and stays recorded for the next attempt; what else
// is recorded is undone all the same.
func TestHostStateCleanupKeepsDirOverAMount(t *testing.T) {
	mounttest.Need(t)
	root := t.TempDir()
	h, err := newHostState(context.Background(), root, "ns", "c", "/b")
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	mounttest.Tmpfs(t, rootfs)
	if err := h.recordRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	// A binds path that is not the runtime's own name is never touched.
	if err := h.record(func(r *persistedState) { r.BindsDir = filepath.Join(h.dir, "elsewhere") }); err != nil {
		t.Fatal(err)
	}
	if err := h.cleanup(); err == nil {
		t.Fatal("cleanup over a foreign share path succeeded")
	}
	if mounttest.Mounted(t, rootfs) {
		t.Error("the rootfs was left mounted because another undo failed")
	}
	if _, err := os.Stat(h.dir); err != nil {
		t.Errorf("state directory removed: %v", err)
	}
	if h.rec.RootfsMounted != "" || h.rec.BindsDir == "" {
		t.Errorf("record after a partial cleanup: %+v", h.rec)
	}
}
