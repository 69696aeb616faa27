package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// Two containers whose roots are directories of one share each see their
// own; a read-only one cannot write it; deleting them releases the share.
func TestPodRootfsPath(t *testing.T) {
	e := newPodEnv(t)
	r1, r2 := e.rootfs("c1"), e.rootfs("c2")
	pid1 := e.run(request("c1", r1, "cat /name > /seen; echo >> /seen; exec sleep 1000"))
	req2 := request("c2", r2, "exec sleep 1000")
	req2.RootfsReadonly = true
	pid2 := e.run(req2)
	if got := e.waitFile("c1/rootfs/seen"); got != "c1" {
		t.Errorf("c1 sees /name %q, want c1", got)
	}
	for pid, want := range map[int]string{pid1: "c1", pid2: "c2"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/name", pid))
		if err != nil || string(b) != want {
			t.Errorf("container of pid %d: /name = %q, %v; want %q", pid, b, err, want)
		}
	}
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/root/x", pid2), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("writing the read-only root of c2: %v, want EROFS", err)
	}
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/root/x", pid1), nil, 0o644); err != nil {
		t.Errorf("writing the root of c1: %v", err)
	}
	if n := e.m.shares[podTag].refs; n != 2 {
		t.Errorf("the pod share has %d references, want 2", n)
	}
	if err := e.m.Delete(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	// c2 still holds the share; its root is still there.
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/name", pid2)); err != nil || string(b) != "c2" {
		t.Errorf("after c1's delete, c2's /name = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(e.m.cfg.SharesDir, podTag, "c2")); err != nil {
		t.Errorf("after c1's delete, the share is gone: %v", err)
	}
	if err := e.m.Delete(context.Background(), "c2"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.m.shares[podTag]; ok {
		t.Error("the pod share is still held after both containers were deleted")
	}
	if _, err := os.Stat(filepath.Join(e.m.cfg.SharesDir, podTag)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the share's mount point is still there: %v", err)
	}
}

func TestValidRootfsPath(t *testing.T) {
	for _, ok := range []string{"c1/rootfs", "rootfs", "a.b/c..d/.e"} {
		if err := validRootfsPath(ok); err != nil {
			t.Errorf("validRootfsPath(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "/c1/rootfs", "c1/../c2/rootfs", "..", "c1/rootfs/..", "./c1", "c1/", "c1//rootfs", ".", "c1/./rootfs", "c1\x00"} {
		err := validRootfsPath(bad)
		if err == nil || !strings.Contains(err.Error(), "rootfs_path") || !strings.Contains(err.Error(), "accepted is") {
			t.Errorf("validRootfsPath(%q) = %v, want an error naming rootfs_path and what is accepted", bad, err)
		}
	}
}

// Bad rootfs_path values are refused as invalid, and a refused create
// leaves the share unmounted.
func TestPodRootfsPathRefused(t *testing.T) {
	e := newPodEnv(t)
	e.rootfs("c1")
	if err := os.WriteFile(filepath.Join(e.share, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	for name, target := range map[string]string{"abs": "/", "up": "..", "away": outside} {
		if err := os.Symlink(target, filepath.Join(e.share, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		path string
		is   func(error) bool
	}{
		{"/c1/rootfs", errdefs.IsInvalidArgument},
		{"c1/../c1/rootfs", errdefs.IsInvalidArgument},
		{"c1/rootfs/", errdefs.IsInvalidArgument},
		{"./c1/rootfs", errdefs.IsInvalidArgument},
		{".", errdefs.IsInvalidArgument},
		{"abs/tmp", errdefs.IsInvalidArgument},        // an absolute symlink out of the share
		{"up/host-shares", errdefs.IsInvalidArgument}, // ".." out of it
		{"away", errdefs.IsInvalidArgument},
		{"file", errdefs.IsInvalidArgument},
		{"c1/missing", func(err error) bool { return errors.Is(err, os.ErrNotExist) }},
	} {
		_, err := e.m.Create(context.Background(), request("x", c.path, "true"))
		if err == nil || !c.is(err) || !strings.Contains(err.Error(), "rootfs_path") {
			t.Errorf("rootfs_path %q: %v", c.path, err)
		}
		if len(e.m.shares) != 0 || len(e.m.containers) != 0 {
			t.Fatalf("rootfs_path %q: a refused create left shares %v, containers %v", c.path, e.m.shares, e.m.containers)
		}
	}
}

// Bind sources are taken from the container's shares (the pod share with
// rootfs_path) and from nowhere else.
func TestPodBindSources(t *testing.T) {
	e := newPodEnv(t)
	r := e.rootfs("c1")
	binds := filepath.Join(e.share, "c1", "binds")
	if err := os.MkdirAll(filepath.Join(binds, "0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(binds, "0", "data"), []byte("from the host"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(binds, "1"), []byte("a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/", filepath.Join(binds, "out")); err != nil {
		t.Fatal(err)
	}
	shares := e.m.cfg.SharesDir
	bind := func(src, dest string) *api.Mount {
		return &api.Mount{Destination: dest, Type: "bind", Source: src, Options: []string{"rbind", "ro"}}
	}
	pid := e.run(request("c1", r, "exec sleep 1000",
		bind(filepath.Join(shares, podTag, "c1/binds/0"), "/data"),
		bind(filepath.Join(shares, podTag, "c1/binds/1"), "/etc/file")))
	for p, want := range map[string]string{"data/data": "from the host", "etc/file": "a file"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/%s", pid, p))
		if err != nil || string(b) != want {
			t.Errorf("/%s in the container: %q, %v; want %q", p, b, err, want)
		}
	}
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/root/data/new", pid), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("writing a read-only bind: %v, want EROFS", err)
	}

	for i, src := range []string{
		"/etc",                                  // the guest's own files
		e.share,                                 // outside SharesDir
		filepath.Join(shares, "other", "x"),     // a share the request does not hold
		filepath.Join(shares, podTag) + "/../x", // not clean
		"relative/path",
	} {
		_, err := e.m.Create(context.Background(), request("c2", e.rootfs(fmt.Sprint("c2-", i)), "true", bind(src, "/x")))
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "accepted are") {
			t.Errorf("bind source %q: %v, want invalid argument saying what is accepted", src, err)
		}
	}
	// A symlink in the share leading out of it is found at mount time.
	_, err := e.m.Create(context.Background(), request("c3", e.rootfs("c3"), "true", bind(filepath.Join(shares, podTag, "c1/binds/out"), "/x")))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "leads out") {
		t.Errorf("bind source through a symlink out of the share: %v", err)
	}
	// Without rootfs_path the root tag is no share of the container's.
	req := request("c4", "", "true", bind(filepath.Join(shares, podTag, "c1/binds/0"), "/x"))
	if _, err := e.m.Create(context.Background(), req); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bind from the root's tag without rootfs_path: %v", err)
	}
	// The host's binds share, as sent today.
	bindsDir := filepath.Join(e.shares, api.BindsTag)
	if err := os.MkdirAll(filepath.Join(bindsDir, "0"), 0o755); err != nil {
		t.Fatal(err)
	}
	req = request("c5", e.rootfs("c5"), "exec sleep 1000", bind(filepath.Join(shares, api.BindsTag, "0"), "/data"))
	req.Shares = []*api.Share{{Tag: api.BindsTag}}
	e.run(req)
}
