package container

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// containerDev builds what create builds for a container's devices: a
// root (a tmpfs standing in for the virtio-fs share, nodev as create
// mounts it), the spec's /dev tmpfs, /dev/pts and a tmpfs volume, then
// the device nodes. It returns the root.
func containerDev(t *testing.T, nodev bool, devTmpfs bool) string {
	t.Helper()
	root := mountRoot(t)
	rootfs := filepath.Join(root, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	var flags uintptr
	if nodev {
		flags = unix.MS_NODEV
	}
	if err := unix.Mount("tmpfs", rootfs, "tmpfs", flags, "size=1m"); err != nil {
		t.Fatal(err)
	}
	mounts := []*api.Mount{{Destination: "/data", Type: "tmpfs", Source: "tmpfs"}}
	if devTmpfs {
		// containerd's defaults: the /dev tmpfs is not nodev.
		mounts = append(mounts,
			&api.Mount{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			&api.Mount{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}})
	}
	plan, err := mountAll(rootfs, mounts, nodev, mountSources{})
	if err != nil {
		t.Fatal(err)
	}
	setupDev(rootfs, filepath.Join(root, "devices"), plan)
	return rootfs
}

// mknodOpen makes a node for /dev/null (harmless should it open) at p and
// returns the error of opening it.
func mknodOpen(t *testing.T, p string) error {
	t.Helper()
	if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatalf("mknod %s: %v", p, err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err == nil {
		f.Close()
	}
	return err
}

// The guest has no device cgroup: a root container (CAP_MKNOD) that makes
// a node on its /dev tmpfs, its root or a tmpfs volume must not be able to
// open it, while the devices it was given, and its ptys, work.
func TestDevicesNodev(t *testing.T) {
	for _, devTmpfs := range []bool{true, false} {
		name := "dev tmpfs"
		if !devTmpfs {
			name = "dev on the root"
		}
		t.Run(name, func(t *testing.T) {
			rootfs := containerDev(t, true, devTmpfs)
			for _, p := range []string{"dev/x", "x", "data/x"} {
				if err := mknodOpen(t, filepath.Join(rootfs, p)); !errors.Is(err, unix.EACCES) {
					t.Errorf("open of a node made at /%s: %v, want EACCES", p, err)
				}
			}
			checkGivenDevices(t, rootfs)
			if devTmpfs {
				p, err := openPty(containerPtmx(rootfs), 0)
				if err != nil {
					t.Fatalf("pty from the container's devpts: %v", err)
				}
				p.master.Close()
				p.reader.Close()
				p.slave.Close()
			}
		})
	}
}

// checkGivenDevices: the default devices open and work, and they are the
// container's own nodes: a chmod does not reach the guest's.
func checkGivenDevices(t *testing.T, rootfs string) {
	t.Helper()
	dev := filepath.Join(rootfs, "dev")
	if err := os.WriteFile(filepath.Join(dev, "null"), []byte("x"), 0); err != nil {
		t.Errorf("write /dev/null: %v", err)
	}
	for _, n := range []string{"zero", "urandom", "random"} {
		f, err := os.Open(filepath.Join(dev, n))
		if err != nil {
			t.Errorf("open /dev/%s: %v", n, err)
			continue
		}
		b := make([]byte, 16)
		if _, err := f.Read(b); err != nil {
			t.Errorf("read /dev/%s: %v", n, err)
		}
		if n == "zero" && !bytes.Equal(b, make([]byte, 16)) {
			t.Errorf("/dev/zero read %x", b)
		}
		f.Close()
	}
	if err := os.WriteFile(filepath.Join(dev, "full"), []byte("x"), 0); !errors.Is(err, unix.ENOSPC) {
		t.Errorf("write /dev/full: %v, want ENOSPC", err)
	}
	for _, d := range devNodes {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dev, d.name), &st); err != nil {
			t.Errorf("/dev/%s: %v", d.name, err)
			continue
		}
		if st.Mode != unix.S_IFCHR|0o666 || st.Rdev != unix.Mkdev(d.major, d.minor) {
			t.Errorf("/dev/%s: mode %o rdev %d:%d", d.name, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
	}
	var before, after unix.Stat_t
	if err := unix.Stat("/dev/null", &before); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dev, "null"), 0o600); err != nil {
		t.Errorf("chmod the container's /dev/null: %v", err)
	}
	if err := unix.Stat("/dev/null", &after); err != nil {
		t.Fatal(err)
	}
	if after.Mode != before.Mode {
		t.Errorf("a chmod of the container's /dev/null changed the guest's: %o -> %o", before.Mode, after.Mode)
	}
}

// A container allowed every device (--privileged) gets no nodev: a node
// it makes opens, as under runc.
func TestDevicesAllowAll(t *testing.T) {
	rootfs := containerDev(t, false, true)
	for _, p := range []string{"dev/x", "x", "data/x"} {
		if err := mknodOpen(t, filepath.Join(rootfs, p)); err != nil {
			t.Errorf("open of a node made at /%s with all devices allowed: %v", p, err)
		}
	}
	checkGivenDevices(t, rootfs)
}

// A FIFO where a device goes is not opened (it would block the agent):
// the device is bound over it.
func TestDevicesOverImageFIFO(t *testing.T) {
	root := mountRoot(t)
	rootfs := filepath.Join(root, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(rootfs, "dev", "null"), 0o644); err != nil {
		t.Fatal(err)
	}
	setupDev(rootfs, filepath.Join(root, "devices"), &mountPlan{})
	if err := os.WriteFile(filepath.Join(rootfs, "dev", "null"), []byte("x"), 0); err != nil {
		t.Errorf("write /dev/null over the image's FIFO: %v", err)
	}
}

func TestAllowsAllDevices(t *testing.T) {
	i := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		name  string
		rules []specs.LinuxDeviceCgroup
		want  bool
	}{
		{"none", nil, false},
		{"privileged", []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}, true},
		{"type a", []specs.LinuxDeviceCgroup{{Allow: true, Type: "a", Major: i(-1), Minor: i(-1)}}, true},
		{"default", []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}, {Allow: true, Type: "c", Major: i(1), Minor: i(3), Access: "rwm"}}, false},
		{"mknod only", []specs.LinuxDeviceCgroup{{Allow: true, Access: "m"}}, false},
		{"chars only", []specs.LinuxDeviceCgroup{{Allow: true, Type: "c", Access: "rwm"}}, false},
		{"denied after", []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}, {Allow: false, Type: "c", Major: i(1), Minor: i(11), Access: "rwm"}}, false},
		{"allowed again", []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}, {Allow: true, Access: "rwm"}}, true},
	} {
		if got := allowsAllDevices(&specs.LinuxResources{Devices: tc.rules}); got != tc.want {
			t.Errorf("%s: allowsAllDevices = %v, want %v", tc.name, got, tc.want)
		}
	}
	if allowsAllDevices(nil) {
		t.Error("no resources: all devices allowed")
	}
}
