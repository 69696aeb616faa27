package initproc

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMaskActionFor(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "kcore")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path string
		want MaskAction
	}{
		{dir, MaskTmpfs},                          // /proc/acpi, /sys/firmware
		{file, MaskDevNull},                       // /proc/kcore
		{"/dev/null", MaskDevNull},                // device nodes too
		{filepath.Join(dir, "missing"), MaskSkip}, // skipped like runc
		{filepath.Join(file, "below"), MaskSkip},  // ENOTDIR
	}
	for _, c := range cases {
		fi, err := os.Stat(c.path)
		got, err := MaskActionFor(fi, err)
		if err != nil || got != c.want {
			t.Errorf("MaskActionFor(%s) = %v, %v; want %v", c.path, got, err, c.want)
		}
	}
	if _, err := MaskActionFor(nil, unix.EACCES); !errors.Is(err, unix.EACCES) {
		t.Errorf("other stat errors must be reported, got %v", err)
	}
}

func TestSysctlPath(t *testing.T) {
	for key, want := range map[string]string{
		"net.ipv4.ip_forward":       "/proc/sys/net/ipv4/ip_forward",
		"kernel.shmmax":             "/proc/sys/kernel/shmmax",
		"fs.mqueue.msg_max":         "/proc/sys/fs/mqueue/msg_max",
		"net/ipv4/ping_group_range": "/proc/sys/net/ipv4/ping_group_range",
	} {
		got, err := SysctlPath("/proc/sys", key)
		if err != nil || got != want {
			t.Errorf("SysctlPath(%q) = %q, %v; want %q", key, got, err, want)
		}
	}
	for _, bad := range []string{"", ".", "..", "net..x", "a/../../etc/passwd", "net.ipv4.", "/net", "a\x00b"} {
		if p, err := SysctlPath("/proc/sys", bad); err == nil {
			t.Errorf("SysctlPath(%q) = %q accepted", bad, p)
		}
	}
}

// A masked file is bound to the container's own /dev/null when it has
// one, never to another node the image put there.
func TestContainerNull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mknod)")
	}
	rootfs := t.TempDir()
	if got := containerNull(rootfs); got != "/dev/null" {
		t.Errorf("no /dev: %q", got)
	}
	dev := filepath.Join(rootfs, "dev")
	if err := os.Mkdir(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dev, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 11))); err != nil {
		t.Fatal(err)
	}
	if got := containerNull(rootfs); got != "/dev/null" {
		t.Errorf("/dev/null is the kmsg device: %q", got)
	}
	if err := os.Remove(filepath.Join(dev, "null")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dev, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if got, want := containerNull(rootfs), filepath.Join(dev, "null"); got != want {
		t.Errorf("containerNull = %q, want %q", got, want)
	}
}
