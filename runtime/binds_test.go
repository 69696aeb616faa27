package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/internal/mounttest"
	"github.com/earendil-works/gondolin-containerd/oci"
	"github.com/earendil-works/gondolin-containerd/vmm"
)

// makeStateDir makes the state directory of container "c" in namespace
// "ns" below root.
func makeStateDir(t *testing.T, root string) string {
	t.Helper()
	dir := StateDir(root, "ns", "c")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeStateFile writes st as the state file of dir, as a shim would have.
func writeStateFile(t *testing.T, dir string, st persistedState) {
	t.Helper()
	h := &hostState{dir: dir}
	if err := h.record(func(r *persistedState) { *r = st }); err != nil {
		t.Fatal(err)
	}
}

// assertGone fails the test if path (not followed) still exists.
func assertGone(t *testing.T, path, what string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left: %v", what, err)
	}
}

func wantErrno(t *testing.T, err error, want unix.Errno, what string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

// The binds share's root takes no new entry, a read-only bind is read-only
// in its submounts too, a read-write bind is writable, and removal leaves
// the sources (and a host mount below one) in place.
func TestPrepareBinds(t *testing.T) {
	mounttest.Need(t)
	tmp := t.TempDir()
	roSrc := filepath.Join(tmp, "ro")
	mounttest.Tmpfs(t, filepath.Join(roSrc, "sub")) // a host mount below a :ro source
	rwSrc := filepath.Join(tmp, "rw")
	if err := os.Mkdir(rwSrc, 0o755); err != nil {
		t.Fatal(err)
	}
	fileSrc := filepath.Join(tmp, "file")
	if err := os.WriteFile(fileSrc, []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "state", "binds")
	if err := os.Mkdir(filepath.Dir(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	err := prepareBinds(dir, []oci.HostBind{
		{Name: "0", Source: roSrc, Readonly: true},
		{Name: "1", Source: rwSrc},
		{Name: "2", Source: fileSrc, Readonly: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeBinds(dir) })

	wantErrno(t, os.WriteFile(filepath.Join(dir, "planted"), nil, 0o644), unix.EROFS, "new file in the share root")
	wantErrno(t, os.Symlink("/proc", filepath.Join(dir, "planted")), unix.EROFS, "new symlink in the share root")
	wantErrno(t, os.Mkdir(filepath.Join(dir, "planted"), 0o755), unix.EROFS, "new directory in the share root")
	wantErrno(t, os.Rename(filepath.Join(dir, "1"), filepath.Join(dir, "x")), unix.EROFS, "rename in the share root")
	wantErrno(t, os.WriteFile(filepath.Join(dir, "0", "x"), nil, 0o644), unix.EROFS, "write into a :ro bind")
	wantErrno(t, os.WriteFile(filepath.Join(dir, "0", "sub", "x"), nil, 0o644), unix.EROFS, "write into a submount of a :ro bind")
	wantErrno(t, os.WriteFile(filepath.Join(dir, "2"), []byte("guest"), 0o644), unix.EROFS, "write to a :ro file bind")
	if err := os.WriteFile(filepath.Join(dir, "1", "x"), []byte("guest"), 0o644); err != nil {
		t.Errorf("write into a :rw bind: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(rwSrc, "x")); string(b) != "guest" {
		t.Errorf("the :rw bind's write did not reach its source: %q", b)
	}

	if err := removeBinds(dir); err != nil {
		t.Fatal(err)
	}
	assertGone(t, dir, "binds share")
	mounttest.NoneBelow(t, filepath.Dir(dir))
	if !mounttest.Mounted(t, filepath.Join(roSrc, "sub")) {
		t.Error("removing the binds unmounted the host mount below a source")
	}
	if b, _ := os.ReadFile(fileSrc); string(b) != "host" {
		t.Errorf("file source changed: %q", b)
	}
	if _, err := os.Stat(filepath.Join(rwSrc, "x")); err != nil {
		t.Errorf("removing the binds removed a source's file: %v", err)
	}
}

// A failing bind leaves nothing mounted.
func TestPrepareBindsFailureLeavesNothing(t *testing.T) {
	mounttest.Need(t)
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "binds")
	err := prepareBinds(dir, []oci.HostBind{{Name: "0", Source: src}, {Name: "1", Source: filepath.Join(tmp, "missing")}})
	if err == nil {
		t.Fatal("a missing source was accepted")
	}
	mounttest.NoneBelow(t, tmp)
	assertGone(t, dir, "binds directory")
}

// A binds share in the layout of older shims (binds straight in a
// directory the guest could write) with what a hostile guest plants there:
// a symlink to a host mount point, a symlink to /proc, a directory with
// files. Removal detaches the real binds, follows no symlink and leaves
// the host's mounts alone.
func TestRemoveBindsHostileLegacyLayout(t *testing.T) {
	mounttest.Need(t)
	tmp := t.TempDir()
	victim := filepath.Join(tmp, "victim")
	mounttest.Tmpfs(t, victim)
	if err := os.WriteFile(filepath.Join(victim, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(tmp, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "state", "binds")
	if err := os.MkdirAll(filepath.Join(dir, "0"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, filepath.Join(dir, "0"), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(filepath.Join(dir, "0"), unix.MNT_DETACH) })
	for name, target := range map[string]string{"1": victim, "proc": "/proc", "dots": "../../victim"} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "junk", "deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "junk", "deeper", "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "junk", "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	if err := removeBinds(dir); err != nil {
		t.Fatal(err)
	}
	if !mounttest.Mounted(t, victim) {
		t.Fatal("a planted symlink made removeBinds unmount a host mount")
	}
	if _, err := os.Stat(filepath.Join(victim, "keep")); err != nil {
		t.Errorf("a planted symlink made removeBinds delete host files: %v", err)
	}
	assertGone(t, dir, "binds directory")
	mounttest.NoneBelow(t, filepath.Dir(dir))
	if _, err := os.Stat(src); err != nil {
		t.Errorf("bind source removed: %v", err)
	}
}

// Cleanup acts only on the share names the runtime makes in the state
// directory, whatever the state file says.
func TestCleanupRefusesForeignSharePaths(t *testing.T) {
	mounttest.Need(t)
	root := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	mounttest.Tmpfs(t, victim)
	for _, st := range []persistedState{{BindsDir: victim}, {ReadonlyRoot: victim}} {
		dir := makeStateDir(t, root)
		writeStateFile(t, dir, st)
		if err := Cleanup(context.Background(), root, "ns", "c"); err == nil {
			t.Errorf("Cleanup accepted state %+v", st)
		}
		if !mounttest.Mounted(t, victim) {
			t.Fatalf("Cleanup unmounted %s, which the state file named", victim)
		}
	}
}

// Cleanup removes the binds share and the read-only root of a shim that
// died, and the state directory with them.
func TestCleanupShares(t *testing.T) {
	mounttest.Need(t)
	root := t.TempDir()
	dir := makeStateDir(t, root)
	src := t.TempDir()
	rootfs := t.TempDir()
	st := persistedState{BindsDir: filepath.Join(dir, bindsName), ReadonlyRoot: filepath.Join(dir, readonlyRootName)}
	if err := prepareBinds(st.BindsDir, []oci.HostBind{{Name: "0", Source: src}}); err != nil {
		t.Fatal(err)
	}
	if _, err := prepareReadonlyRoot(st.ReadonlyRoot, rootfs); err != nil {
		t.Fatal(err)
	}
	writeStateFile(t, dir, st)
	if err := Cleanup(context.Background(), root, "ns", "c"); err != nil {
		t.Fatal(err)
	}
	mounttest.NoneBelow(t, root)
	assertGone(t, dir, "state directory")
}

// unmountRootfs detaches the rootfs without following what the guest wrote
// in it: a symlink there naming a host mount point is not unmounted.
func TestUnmountRootfsIgnoresGuestSymlinks(t *testing.T) {
	mounttest.Need(t)
	tmp := t.TempDir()
	victim := filepath.Join(tmp, "victim")
	mounttest.Tmpfs(t, victim)
	rootfs := filepath.Join(tmp, "bundle", "rootfs")
	mounttest.Tmpfs(t, rootfs)
	if err := os.Symlink(victim, filepath.Join(rootfs, "evil")); err != nil {
		t.Fatal(err)
	}
	mounttest.Tmpfs(t, filepath.Join(rootfs, "sub")) // host-made, below the rootfs
	if err := unmountRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	mounttest.NoneBelow(t, rootfs)
	if !mounttest.Mounted(t, victim) {
		t.Error("unmountRootfs unmounted the target of a symlink in the rootfs")
	}
	if err := unmountRootfs(filepath.Join(tmp, "missing", "rootfs")); err != nil {
		t.Errorf("missing rootfs: %v", err)
	}
}

// The read-only root takes the agent's mount points until it is sealed,
// never writes the container's rootfs, and is read-only after the seal.
func TestReadonlyRoot(t *testing.T) {
	mounttest.Need(t)
	tmp := t.TempDir()
	rootfs := filepath.Join(tmp, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc", "passwd"), []byte("root"), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(tmp, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(state, readonlyRootName)
	share, err := prepareReadonlyRoot(dir, rootfs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = detachAndRemove(dir) })
	// Before the seal: the agent's mount points.
	if err := os.Mkdir(filepath.Join(share, "proc"), 0o755); err != nil {
		t.Fatalf("mount point before the seal: %v", err)
	}
	if err := os.WriteFile(filepath.Join(share, "etc", "resolv.conf"), nil, 0o644); err != nil {
		t.Fatalf("file mount point before the seal: %v", err)
	}
	// A file held open for writing keeps it from being sealed.
	f, err := os.OpenFile(filepath.Join(share, "etc", "resolv.conf"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantErrno(t, sealReadonlyRoot(share), unix.EBUSY, "seal with a file open for writing")
	f.Close()
	if err := sealReadonlyRoot(share); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, os.WriteFile(filepath.Join(share, "etc", "passwd"), []byte("guest"), 0o644), unix.EROFS, "write after the seal")
	wantErrno(t, os.Mkdir(filepath.Join(share, "x"), 0o755), unix.EROFS, "mkdir after the seal")
	// What a copy of the mount could do: make its own mount read-write.
	if err := unix.Mount("", share, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		t.Fatalf("bind remount read-write: %v", err)
	}
	wantErrno(t, os.WriteFile(filepath.Join(share, "etc", "passwd"), []byte("guest"), 0o644), unix.EROFS, "write after a per-mount remount read-write")
	if b, _ := os.ReadFile(filepath.Join(share, "etc", "passwd")); string(b) != "root" {
		t.Errorf("the root shows %q", b)
	}
	for _, p := range []string{"proc", "etc/resolv.conf"} {
		if _, err := os.Lstat(filepath.Join(rootfs, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s reached the container's rootfs: %v", p, err)
		}
	}
	if err := detachAndRemove(dir); err != nil {
		t.Fatal(err)
	}
	mounttest.NoneBelow(t, state)
	if b, _ := os.ReadFile(filepath.Join(rootfs, "etc", "passwd")); string(b) != "root" {
		t.Errorf("rootfs changed: %q", b)
	}
}

// The console log keeps the head up to the limit and ends with one line
// saying the rest was discarded; later connections (a VM booted again)
// append under the same limit.
func TestConsoleLogCap(t *testing.T) {
	dir := t.TempDir()
	path, sock := filepath.Join(dir, "console.log"), filepath.Join(dir, "console.sock")
	const limit = 4096
	c, err := openConsoleLog("c", path, sock, limit, nil)
	if err != nil {
		t.Fatal(err)
	}
	send := func(b []byte) {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		conn.Close()
	}
	send([]byte("boot error: the first line\n"))
	send([]byte(strings.Repeat("flood flood flood\n", 100000)))
	c.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > limit {
		t.Errorf("console log is %d bytes, over the %d limit", len(b), limit)
	}
	if !strings.HasPrefix(string(b), "boot error: the first line\n") {
		t.Errorf("the head is lost: %q", b[:min(len(b), 64)])
	}
	if !strings.HasSuffix(string(b), "the rest of the guest's console output was discarded]\n") {
		t.Errorf("no closing line: %q", b[max(0, len(b)-200):])
	}
	if c.dropped == 0 {
		t.Error("nothing counted as discarded")
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("console socket left: %v", err)
	}
	if !strings.Contains(vmm.TailLines(path, 2), "discarded") {
		t.Errorf("tailLines = %q", vmm.TailLines(path, 2))
	}
}

// A tiny limit is still a hard bound.
func TestConsoleLogTinyLimit(t *testing.T) {
	dir := t.TempDir()
	path, sock := filepath.Join(dir, "console.log"), filepath.Join(dir, "console.sock")
	c, err := openConsoleLog("c", path, sock, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.write([]byte(strings.Repeat("x", 100)))
	c.write([]byte("y"))
	c.Close()
	if fi, err := os.Stat(path); err != nil || fi.Size() > 10 {
		t.Fatalf("console log: %v, %v", fi, err)
	}
}

// The state file still reads the binds share of older shims.
func TestPersistedStateFields(t *testing.T) {
	var st persistedState
	if err := json.Unmarshal([]byte(`{"bundle":"/b","binds_dir":"/s/binds","readonly_root":"/s/rootfs-ro"}`), &st); err != nil {
		t.Fatal(err)
	}
	if st.BindsDir != "/s/binds" || st.ReadonlyRoot != "/s/rootfs-ro" {
		t.Errorf("%+v", st)
	}
}

// A state directory without its state file still has any share detached
// before it is removed: the files behind a bind stay.
func TestCleanupWithoutStateFileDetachesShares(t *testing.T) {
	mounttest.Need(t)
	root := t.TempDir()
	dir := makeStateDir(t, root)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "keep"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := prepareBinds(filepath.Join(dir, bindsName), []oci.HostBind{{Name: "0", Source: src}}); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(context.Background(), root, "ns", "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(src, "keep")); err != nil {
		t.Errorf("cleanup removed a bind's host file: %v", err)
	}
	mounttest.NoneBelow(t, root)
}

// Whatever the guest sends, in whatever pieces, the console log stays
// within its limit and keeps the head.
func FuzzConsoleLogCap(f *testing.F) {
	f.Add(uint16(100), []byte("hello\nworld\n"), uint8(3))
	f.Add(uint16(1), []byte("x"), uint8(1))
	f.Add(uint16(300), bytes.Repeat([]byte("flood "), 200), uint8(7))
	f.Fuzz(func(t *testing.T, limit uint16, data []byte, pieces uint8) {
		if limit == 0 {
			return
		}
		dir := t.TempDir()
		path := filepath.Join(dir, "console.log")
		c, err := openConsoleLog("c", path, filepath.Join(dir, "s"), int64(limit), nil)
		if err != nil {
			t.Fatal(err)
		}
		n := int(pieces%16) + 1
		for i := 0; i < n; i++ {
			lo, hi := len(data)*i/n, len(data)*(i+1)/n
			c.write(data[lo:hi])
		}
		c.Close()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > int(limit) {
			t.Fatalf("log is %d bytes, limit %d", len(b), limit)
		}
		if c.dropped == 0 && !bytes.Equal(b, data) {
			t.Fatalf("nothing dropped but the log differs from the input")
		}
		if c.dropped > 0 {
			head := int(limit) - len(fmt.Sprintf(consoleCappedLine, limit))
			if head > 0 && !bytes.Equal(b[:head], data[:head]) {
				t.Fatalf("the head is not the first %d bytes", head)
			}
			if c.dropped+int64(max(head, 0)) != int64(len(data)) {
				t.Fatalf("dropped %d + kept %d != %d", c.dropped, head, len(data))
			}
		}
	})
}

// Close ends the copy while the VMM's connection is still open and idle.
func TestConsoleLogCloseWithOpenConnection(t *testing.T) {
	dir := t.TempDir()
	path, sock := filepath.Join(dir, "console.log"), filepath.Join(dir, "console.sock")
	c, err := openConsoleLog("c", path, sock, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("booting\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		if b, _ := os.ReadFile(path); string(b) == "booting\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the console output did not reach the log")
		}
		time.Sleep(10 * time.Millisecond)
	}
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close hangs on an open console connection")
	}
}
