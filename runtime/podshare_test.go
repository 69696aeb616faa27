package runtime

import (
	"context"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/internal/mounttest"
	"github.com/earendil-works/gondolin-containerd/oci"
)

// inOtherMountNS runs fn on a thread of its own in a copy of the mount
// namespace made now, as a file server's sandbox is made when it starts;
// the thread is never used again.
type otherMountNS struct {
	calls chan func()
	done  chan struct{}
}

func newOtherMountNS(t *testing.T) *otherMountNS {
	t.Helper()
	ns := &otherMountNS{calls: make(chan func()), done: make(chan struct{})}
	ready := make(chan error)
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_FS); err != nil {
			ready <- err
			return
		}
		ready <- nil
		for fn := range ns.calls {
			fn()
			ns.done <- struct{}{}
		}
	}()
	if err := <-ready; err != nil {
		t.Fatalf("unshare the mount namespace: %v", err)
	}
	t.Cleanup(func() { close(ns.calls) })
	return ns
}

func (ns *otherMountNS) do(fn func()) {
	ns.calls <- fn
	<-ns.done
}

// The pod share: what is bound into a container's entry after the file
// server started reaches the file server's view, the guest cannot write
// the share's top level, a container's root is writable through it, its
// binds' read-only entries stay read-only, and taking a container out (or
// the whole share away) leaves nothing mounted and the sources intact.
func TestPodShare(t *testing.T) {
	mounttest.Need(t)
	root := t.TempDir()
	dir := filepath.Join(makeStateDir(t, root), podShareName)
	export, err := preparePodShare(dir)
	if err != nil {
		t.Fatal(err)
	}
	server := newOtherMountNS(t) // the file server, started with the VM

	rootfs := t.TempDir()
	mounttest.Tmpfs(t, rootfs)
	if err := os.WriteFile(filepath.Join(rootfs, "hello"), []byte("c1"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "keep"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	binds := filepath.Join(makeStateDir(t, t.TempDir()), bindsName)
	if err := prepareBinds(binds, []oci.HostBind{{Name: "0", Source: src, Readonly: true}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeBinds(binds) })
	entry := podEntry(dir, "c1")
	if err := publishInPod(entry, rootfs, binds); err != nil {
		t.Fatal(err)
	}

	server.do(func() {
		b, err := os.ReadFile(filepath.Join(export, "c1", "rootfs", "hello"))
		if err != nil || string(b) != "c1" {
			t.Errorf("the file server does not see the container's root: %q, %v", b, err)
		}
		if b, err := os.ReadFile(filepath.Join(export, "c1", "binds", "0", "keep")); err != nil || string(b) != "host" {
			t.Errorf("the file server does not see the container's bind: %q, %v", b, err)
		}
		wantErrno(t, os.WriteFile(filepath.Join(export, "planted"), nil, 0o644), unix.EROFS, "write at the share's top")
		wantErrno(t, os.Mkdir(filepath.Join(export, "c2"), 0o755), unix.EROFS, "add an entry")
		wantErrno(t, os.Rename(filepath.Join(export, "c1"), filepath.Join(export, "c9")), unix.EROFS, "rename an entry")
		wantErrno(t, os.WriteFile(filepath.Join(export, "c1", "binds", "0", "new"), nil, 0o644), unix.EROFS, "write into a read-only bind")
		if err := os.WriteFile(filepath.Join(export, "c1", "rootfs", "written"), []byte("guest"), 0o644); err != nil {
			t.Errorf("the container's root is not writable through the share: %v", err)
		}
	})
	if _, err := os.Stat(filepath.Join(rootfs, "written")); err != nil {
		t.Errorf("a write through the share did not reach the root: %v", err)
	}

	if err := unpublishFromPod(entry); err != nil {
		t.Fatal(err)
	}
	assertGone(t, entry, "the container's entry")
	server.do(func() {
		if _, err := os.Stat(filepath.Join(export, "c1")); err == nil {
			t.Error("the file server still sees the removed container")
		}
	})
	if err := unpublishFromPod(entry); err != nil {
		t.Errorf("a second unpublish: %v", err)
	}

	// Another container, then the whole share goes at once.
	if err := publishInPod(podEntry(dir, "c2"), rootfs, ""); err != nil {
		t.Fatal(err)
	}
	if err := removePodShare(dir); err != nil {
		t.Fatal(err)
	}
	assertGone(t, dir, "the pod share")
	if _, err := os.Stat(filepath.Join(rootfs, "hello")); err != nil {
		t.Errorf("removing the pod share removed the container's files: %v", err)
	}
	if _, err := os.Stat(filepath.Join(src, "keep")); err != nil {
		t.Errorf("removing the pod share removed a bind's host file: %v", err)
	}
	mounttest.NoneBelow(t, filepath.Dir(dir))
}

// A sandbox's cleanup cleans up its pod's containers too (containerd runs
// no `shim delete` for them), and acts only on state directories beside
// its own and on entries of a pod share there.
func TestCleanupPodMembers(t *testing.T) {
	mounttest.Need(t)
	root := t.TempDir()
	ctx := context.Background()
	owner, err := newHostState(ctx, root, "ns", "sandbox", "/b")
	if err != nil {
		t.Fatal(err)
	}
	shareDir, err := owner.recordPodShare()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := preparePodShare(shareDir); err != nil {
		t.Fatal(err)
	}
	member, err := newHostState(ctx, root, "ns", "c1", "/b1")
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.recordMember(member.dir); err != nil {
		t.Fatal(err)
	}
	rootfs := t.TempDir()
	mounttest.Tmpfs(t, rootfs)
	entry := podEntry(shareDir, "c1")
	if err := member.recordPodEntry(entry); err != nil {
		t.Fatal(err)
	}
	if err := publishInPod(entry, rootfs, ""); err != nil {
		t.Fatal(err)
	}

	// The shim died: `shim delete` of the sandbox.
	if err := Cleanup(ctx, root, "ns", "sandbox"); err != nil {
		t.Fatal(err)
	}
	assertGone(t, owner.dir, "the sandbox's state directory")
	assertGone(t, member.dir, "the member's state directory")
	mounttest.NoneBelow(t, root)

	// A state file naming foreign paths is refused, and they stay.
	foreign := t.TempDir()
	dir := makeStateDir(t, root)
	writeStateFile(t, dir, persistedState{Members: []string{foreign}, PodEntry: filepath.Join(foreign, "pod", "mounts", "x")})
	err = Cleanup(ctx, root, "ns", "c")
	if err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("cleanup of foreign member paths: %v", err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("a foreign directory was removed: %v", err)
	}
}
