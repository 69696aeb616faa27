package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// Containers with a pod shm mount share one tmpfs, made at its first use
// with the first mount's size.
func TestPodShm(t *testing.T) {
	e := newPodEnv(t)
	shm := func(opts ...string) *api.Mount {
		return &api.Mount{Destination: "/dev/shm", Type: api.PodShmMountType, Options: opts}
	}
	e.run(request("a", e.rootfs("a"), "echo from-a > /dev/shm/hello; exec sleep 1000", shm("rbind", "rprivate", "rw", "size=1m")))
	pidB := e.run(request("b", e.rootfs("b"), "while ! cat /dev/shm/hello > /got 2>/dev/null; do sleep 0.05; done; exec sleep 1000", shm()))
	if got := e.waitFile("b/rootfs/got"); got != "from-a" {
		t.Errorf("b read %q from /dev/shm/hello, want from-a", got)
	}
	pidC := e.run(request("c", e.rootfs("c"), "exec sleep 1000"))
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/dev/shm/hello", pidC)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a container without the pod shm sees its file: %v", err)
	}

	var st unix.Statfs_t
	if err := unix.Statfs(e.m.cfg.PodShmDir, &st); err != nil {
		t.Fatal(err)
	}
	if size := st.Blocks * uint64(st.Bsize); size != 1<<20 {
		t.Errorf("pod shm size %d, want 1m", size)
	}
	const want = unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC
	var stB unix.Statfs_t
	bShm := fmt.Sprintf("/proc/%d/root/dev/shm", pidB)
	if err := unix.Statfs(bShm, &stB); err != nil {
		t.Fatal(err)
	}
	var devPod, devB unix.Stat_t
	if err := unix.Stat(e.m.cfg.PodShmDir, &devPod); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(bShm, &devB); err != nil {
		t.Fatal(err)
	}
	if uint64(stB.Flags)&want != want || devB.Dev != devPod.Dev {
		t.Errorf("b's /dev/shm: flags %#x, device %d; want nosuid,nodev,noexec and the pod shm's device %d", stB.Flags, devB.Dev, devPod.Dev)
	}
	fi, err := os.Stat(e.m.cfg.PodShmDir)
	if err != nil || fi.Mode()&(os.ModePerm|os.ModeSticky) != 0o777|os.ModeSticky {
		t.Errorf("pod shm mode %v, %v; want 1777", fi.Mode(), err)
	}

	// The same size in other words is accepted; another one is not.
	e.run(request("d", e.rootfs("d"), "exec sleep 1000", shm("size=1024k")))
	_, err = e.m.Create(context.Background(), request("e", e.rootfs("e"), "true", shm("size=2m")))
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "size=1m") {
		t.Errorf("a second size: %v", err)
	}
	for i, bad := range []*api.Mount{
		shm("size=0"), shm("size=lots"), shm("mode=0700"), shm("size=1m", "suid"), shm("remount"),
		{Destination: "/dev/shm", Type: api.PodShmMountType, Source: "/run/shm"},
	} {
		_, err := e.m.Create(context.Background(), request("f", e.rootfs(fmt.Sprint("f-", i)), "true", bad))
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), api.PodShmMountType) {
			t.Errorf("pod shm mount %v: %v", bad, err)
		}
	}
}

func TestParseTmpfsSize(t *testing.T) {
	for v, want := range map[string]uint64{"1": 1, "64m": 64 << 20, "1024k": 1 << 20, "2G": 2 << 30, "50%": 50} {
		if n, _, err := parseTmpfsSize(v); err != nil || n != want {
			t.Errorf("parseTmpfsSize(%q) = %d, %v; want %d", v, n, err, want)
		}
	}
	for _, bad := range []string{"", "0", "0m", "m", "-1", "+1", "1x", "101%", "99999999999999999999"} {
		if _, _, err := parseTmpfsSize(bad); err == nil {
			t.Errorf("parseTmpfsSize(%q) accepted", bad)
		}
	}
	if !sameTmpfsSize("64m", "65536k") || sameTmpfsSize("64m", "65m") || sameTmpfsSize("50%", "50m") {
		t.Error("sameTmpfsSize")
	}
}
