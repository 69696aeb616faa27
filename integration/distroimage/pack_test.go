package distroimage

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/integration/testimage"
)

var testMtime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

type tarFile = testimage.TarFile

// readTar returns the archive's entries in order (testimage.ReadTar).
func readTar(t *testing.T, r io.Reader) []tarFile {
	t.Helper()
	files, err := testimage.ReadTar(r)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// writeTestFile writes a file with the Unix mode bits mode (0o4755 is setuid: os.Chmod
// would take Go's FileMode bits and drop it).
func writeTestFile(t *testing.T, p, content string, mode uint32) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(content), 0o600))
	must(t, syscall.Chmod(p, mode))
}

// testTree builds a small tree with one of every kind of file debootstrap leaves. It
// reports whether it could create the device node (it needs CAP_MKNOD).
func testTree(t *testing.T) (string, bool) {
	t.Helper()
	root := t.TempDir()
	writeTestFile(t, filepath.Join(root, "etc/hostname"), "box\n", 0o644)
	writeTestFile(t, filepath.Join(root, "usr/bin/tool"), "#!/bin/sh\necho tool\n", 0o4755)
	must(t, os.Link(filepath.Join(root, "usr/bin/tool"), filepath.Join(root, "usr/bin/tool2")))
	must(t, os.Symlink("usr/bin", filepath.Join(root, "bin")))
	must(t, os.Symlink("/proc/self/fd", filepath.Join(root, "fd")))
	must(t, os.Mkdir(filepath.Join(root, "tmp"), 0o755))
	must(t, syscall.Chmod(filepath.Join(root, "tmp"), 0o1777))
	must(t, os.Mkdir(filepath.Join(root, "run"), 0o755))
	must(t, syscall.Mkfifo(filepath.Join(root, "run/initctl"), 0o600))
	must(t, os.Mkdir(filepath.Join(root, "dev"), 0o755))
	if os.Geteuid() == 0 {
		must(t, os.Lchown(filepath.Join(root, "etc/hostname"), 1000, 42))
		must(t, os.Lchown(filepath.Join(root, "bin"), 0, 42))
	}
	devOK := syscall.Mknod(filepath.Join(root, "dev/null"), syscall.S_IFCHR|0o666, int(unix.Mkdev(1, 3))) == nil
	l, err := net.Listen("unix", filepath.Join(root, "run/sock"))
	must(t, err)
	t.Cleanup(func() { l.Close() })
	return root, devOK
}

func packTree(t *testing.T, root string) ([]byte, *PackStats) {
	t.Helper()
	var buf bytes.Buffer
	stats, err := PackLayer(&buf, root, testMtime)
	if err != nil {
		t.Fatalf("PackLayer: %v", err)
	}
	return buf.Bytes(), stats
}

func TestPackLayerEntries(t *testing.T) {
	root, devOK := testTree(t)
	layer, stats := packTree(t, root)
	files := testimage.ByName(readTar(t, bytes.NewReader(layer)))

	type want struct {
		typ      byte
		mode     int64
		uid, gid int
		link     string
		data     string
	}
	wants := map[string]want{
		"bin":           {typ: tar.TypeSymlink, mode: 0o777, link: "usr/bin"},
		"dev/":          {typ: tar.TypeDir, mode: 0o755},
		"etc/":          {typ: tar.TypeDir, mode: 0o755},
		"etc/hostname":  {typ: tar.TypeReg, mode: 0o644, data: "box\n"},
		"fd":            {typ: tar.TypeSymlink, mode: 0o777, link: "/proc/self/fd"},
		"run/":          {typ: tar.TypeDir, mode: 0o755},
		"run/initctl":   {typ: tar.TypeFifo, mode: 0o600},
		"tmp/":          {typ: tar.TypeDir, mode: 0o1777},
		"usr/":          {typ: tar.TypeDir, mode: 0o755},
		"usr/bin/":      {typ: tar.TypeDir, mode: 0o755},
		"usr/bin/tool":  {typ: tar.TypeReg, mode: 0o4755, data: "#!/bin/sh\necho tool\n"},
		"usr/bin/tool2": {typ: tar.TypeLink, mode: 0o4755, link: "usr/bin/tool"},
	}
	if os.Geteuid() == 0 {
		w := wants["etc/hostname"]
		w.uid, w.gid = 1000, 42
		wants["etc/hostname"] = w
		w = wants["bin"]
		w.gid = 42
		wants["bin"] = w
	}
	for name, w := range wants {
		f, ok := files[name]
		if !ok {
			t.Errorf("%s: missing", name)
			continue
		}
		h := f.Hdr
		if h.Typeflag != w.typ || h.Mode != w.mode || h.Uid != w.uid || h.Gid != w.gid || h.Linkname != w.link || string(f.Data) != w.data {
			t.Errorf("%s: type %c mode %o owner %d:%d link %q data %q; want type %c mode %o owner %d:%d link %q data %q",
				name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Linkname, f.Data, w.typ, w.mode, w.uid, w.gid, w.link, w.data)
		}
		if !h.ModTime.Equal(testMtime) || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: mtime %v, owner names %q:%q; want %v and numeric owners only", name, h.ModTime, h.Uname, h.Gname, testMtime)
		}
	}
	if len(files) != len(wants) {
		var names []string
		for n := range files {
			names = append(names, n)
		}
		slices.Sort(names)
		t.Errorf("archive has %d entries, want %d: %v", len(files), len(wants), names)
	}

	wantSkipped := []string{"run/sock"}
	if devOK {
		wantSkipped = []string{"dev/null", "run/sock"}
	}
	if !slices.Equal(stats.Skipped, wantSkipped) {
		t.Errorf("skipped %v, want %v", stats.Skipped, wantSkipped)
	}
	if stats.Entries != len(wants) || stats.HardLinks != 1 || stats.Bytes != int64(len("#!/bin/sh\necho tool\n")+len("box\n")) {
		t.Errorf("stats %+v", stats)
	}
}

func TestPackLayerIsReproducible(t *testing.T) {
	root, _ := testTree(t)
	a, _ := packTree(t, root)
	// New mtimes and a new inode order must not matter.
	must(t, os.Chtimes(filepath.Join(root, "etc/hostname"), time.Now(), time.Now()))
	must(t, os.Rename(filepath.Join(root, "usr/bin/tool"), filepath.Join(root, "usr/bin/x")))
	must(t, os.Rename(filepath.Join(root, "usr/bin/x"), filepath.Join(root, "usr/bin/tool")))
	b, _ := packTree(t, root)
	if !bytes.Equal(a, b) {
		t.Fatal("packing the same tree twice gave different bytes")
	}
}

// A capability set of revision 2 (the kernel checks the format): cap_net_raw
// permitted and effective.
func capabilityValue() []byte {
	const vfsCapRevision2, vfsCapFlagsEffective = 0x02000000, 0x000001
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], vfsCapRevision2|vfsCapFlagsEffective)
	binary.LittleEndian.PutUint32(b[4:], 1<<unix.CAP_NET_RAW) // permitted, low word
	return b
}

func TestPackLayerKeepsCapabilities(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "ping")
	writeTestFile(t, p, "ping", 0o755)
	if err := unix.Setxattr(p, capabilityXattr, capabilityValue(), 0); err != nil {
		t.Skipf("cannot set file capabilities here: %v", err)
	}
	layer, _ := packTree(t, root)
	f := testimage.ByName(readTar(t, bytes.NewReader(layer)))["ping"]
	if f.Hdr == nil {
		t.Fatal("ping missing")
	}
	if got := f.Hdr.PAXRecords["SCHILY.xattr."+capabilityXattr]; got != string(capabilityValue()) {
		t.Errorf("capability record %q, want %q", got, capabilityValue())
	}
}

// mountTmpfs mounts a tmpfs at dir (skipping the test where that is not allowed) and
// unmounts it at the end of the test if it is still there.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	must(t, os.MkdirAll(dir, 0o755))
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
}

func TestPackLayerRefusesMounts(t *testing.T) {
	root := t.TempDir()
	mountTmpfs(t, filepath.Join(root, "proc"))
	writeTestFile(t, filepath.Join(root, "proc/version"), "host data", 0o644)
	_, err := PackLayer(io.Discard, root, testMtime)
	if err == nil {
		t.Fatal("PackLayer packed a tree with a mount inside")
	}
}

func TestRemoveTreeUnmountsFirst(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	writeTestFile(t, filepath.Join(outside, "keep"), "not part of the tree", 0o644)
	tree := filepath.Join(base, "tree")
	mountTmpfs(t, filepath.Join(tree, "proc"))
	// Like debootstrap's bind mounts: removing the tree must not delete their source.
	must(t, os.MkdirAll(filepath.Join(tree, "dev/shm"), 0o755))
	must(t, syscall.Mount(outside, filepath.Join(tree, "dev/shm"), "", syscall.MS_BIND, ""))
	t.Cleanup(func() { _ = syscall.Unmount(filepath.Join(tree, "dev/shm"), syscall.MNT_DETACH) })

	if err := removeTree(tree); err != nil {
		t.Fatalf("removeTree: %v", err)
	}
	if _, err := os.Stat(tree); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tree still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "keep")); err != nil {
		t.Errorf("removeTree deleted a bind mount's source: %v", err)
	}
	if left, _ := mountsUnder(tree); len(left) > 0 {
		t.Errorf("mounts left: %v", left)
	}
}

func TestParseMountsUnder(t *testing.T) {
	info := `22 1 8:1 / / rw - ext4 /dev/vda rw
30 22 0:5 / /b/root/proc rw - proc proc rw
31 22 0:6 / /b/root/dev/pts rw - devpts devpts rw
32 22 0:7 / /b/root/dev rw - tmpfs nodev rw
33 22 0:8 / /b/root2/proc rw - proc proc rw
34 22 0:9 / /b/root/with\040space rw - tmpfs x rw
35 22 0:5 / /b/root/proc rw - proc proc rw
`
	got := parseMountsUnder([]byte(info), "/b/root")
	want := []string{"/b/root/with space", "/b/root/dev/pts", "/b/root/proc", "/b/root/proc", "/b/root/dev"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
