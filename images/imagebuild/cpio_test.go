package imagebuild

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
)

func sampleArchive(t *testing.T, reverse bool) *Archive {
	t.Helper()
	type op func(a *Archive) error
	ops := []op{
		func(a *Archive) error { return a.AddFile("/init", 0o755, []byte("#!agent\n")) },
		func(a *Archive) error { return a.AddDir("/tmp", 0o1777) },
		func(a *Archive) error { return a.AddCharDev("/dev/console", 0o600, 5, 1) },
		func(a *Archive) error { return a.AddFile("/lib/modules/virtio.ko", 0o644, []byte("abc")) },
		func(a *Archive) error {
			return a.AddFile("/lib/modules/load.order", 0o644, []byte("/lib/modules/virtio.ko\n"))
		},
		func(a *Archive) error { return a.AddSymlink("/bin", "/usr/bin") },
		func(a *Archive) error { return a.AddDir("/lib-extra", 0o755) },
		func(a *Archive) error { return a.AddFile("/empty", 0o644, nil) },
	}
	a := NewArchive()
	for i := range ops {
		o := ops[i]
		if reverse {
			o = ops[len(ops)-1-i]
		}
		if err := o(a); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

func TestArchiveDeterministic(t *testing.T) {
	a := sampleArchive(t, false).Bytes()
	b := sampleArchive(t, false).Bytes()
	c := sampleArchive(t, true).Bytes()
	if !bytes.Equal(a, b) || !bytes.Equal(a, c) {
		t.Fatal("same entries gave different archives")
	}
	if len(a)%512 != 0 {
		t.Errorf("archive length %d is not a multiple of 512", len(a))
	}
}

type rawHeader struct {
	name                                              string
	ino, mode, uid, gid, nlink, mtime, size           int64
	devmaj, devmin, rdevmaj, rdevmin, namesize, check int64
	data                                              []byte
}

// parseNewc is an independent strict parser of the raw newc layout, to check
// the fields the library reader does not expose (rdev) and the padding.
func parseNewc(t *testing.T, b []byte) []rawHeader {
	t.Helper()
	var out []rawHeader
	off := 0
	align := func() { off = (off + 3) &^ 3 }
	for {
		if off+110 > len(b) {
			t.Fatalf("truncated header at %d", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		f := make([]int64, 13)
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("bad hex field %d at %d: %v", i, off, err)
			}
			f[i] = int64(v)
		}
		r := rawHeader{ino: f[0], mode: f[1], uid: f[2], gid: f[3], nlink: f[4], mtime: f[5], size: f[6],
			devmaj: f[7], devmin: f[8], rdevmaj: f[9], rdevmin: f[10], namesize: f[11], check: f[12]}
		off += 110
		name := b[off : off+int(r.namesize)]
		if name[len(name)-1] != 0 {
			t.Fatalf("name not NUL-terminated at %d", off)
		}
		r.name = string(name[:len(name)-1])
		off += int(r.namesize)
		align()
		r.data = b[off : off+int(r.size)]
		off += int(r.size)
		align()
		if r.name == "TRAILER!!!" {
			for _, c := range b[off:] {
				if c != 0 {
					t.Fatal("non-zero bytes after trailer")
				}
			}
			return out
		}
		out = append(out, r)
	}
}

func TestArchiveFormat(t *testing.T) {
	b := sampleArchive(t, false).Bytes()
	raw := parseNewc(t, b)
	wantNames := []string{"bin", "dev", "dev/console", "empty", "init", "lib", "lib-extra", "lib/modules",
		"lib/modules/load.order", "lib/modules/virtio.ko", "tmp"}
	var got []string
	for i, r := range raw {
		got = append(got, r.name)
		if r.ino != int64(i+1) {
			t.Errorf("%s: inode %d, want %d", r.name, r.ino, i+1)
		}
		if r.uid != 0 || r.gid != 0 || r.mtime != 0 || r.devmaj != 0 || r.devmin != 0 || r.check != 0 {
			t.Errorf("%s: non-zero uid/gid/mtime/dev/check: %+v", r.name, r)
		}
	}
	if strings.Join(got, " ") != strings.Join(wantNames, " ") {
		t.Fatalf("names\n got %v\nwant %v", got, wantNames)
	}
	byName := map[string]rawHeader{}
	for _, r := range raw {
		byName[r.name] = r
	}
	checks := []struct {
		name  string
		mode  int64
		nlink int64
		data  string
	}{
		{"init", 0o100755, 1, "#!agent\n"},
		{"tmp", 0o41777, 2, ""},
		{"dev", 0o40755, 2, ""}, // implied parent
		{"lib", 0o40755, 2, ""},
		{"dev/console", 0o20600, 1, ""},
		{"bin", 0o120777, 1, "/usr/bin"},
		{"lib/modules/virtio.ko", 0o100644, 1, "abc"},
		{"empty", 0o100644, 1, ""},
	}
	for _, c := range checks {
		r := byName[c.name]
		if r.mode != c.mode || r.nlink != c.nlink || string(r.data) != c.data {
			t.Errorf("%s: mode %o nlink %d data %q; want %o %d %q", c.name, r.mode, r.nlink, r.data, c.mode, c.nlink, c.data)
		}
	}
	if c := byName["dev/console"]; c.rdevmaj != 5 || c.rdevmin != 1 {
		t.Errorf("/dev/console rdev %d:%d, want 5:1", c.rdevmaj, c.rdevmin)
	}
}

// TestArchiveLibraryReader parses the archive with github.com/cavaliergopher/cpio.
func TestArchiveLibraryReader(t *testing.T) {
	b := sampleArchive(t, false).Bytes()
	r := cpio.NewReader(bytes.NewReader(b))
	files := map[string]string{}
	n := 0
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		if h.ModTime.Unix() != 0 || h.Uid != 0 || h.Guid != 0 {
			t.Errorf("%s: mtime %v uid %d gid %d", h.Name, h.ModTime.Unix(), h.Uid, h.Guid)
		}
		if h.Mode.IsRegular() {
			data, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = string(data)
		}
		if h.Name == "bin" && h.Linkname != "/usr/bin" {
			t.Errorf("symlink target %q", h.Linkname)
		}
	}
	if n != 11 {
		t.Errorf("read %d entries, want 11", n)
	}
	if files["init"] != "#!agent\n" || files["lib/modules/load.order"] != "/lib/modules/virtio.ko\n" || files["lib/modules/virtio.ko"] != "abc" {
		t.Errorf("file contents: %q", files)
	}
}

func TestArchiveErrors(t *testing.T) {
	a := NewArchive()
	if err := a.AddFile("init", 0o755, nil); err == nil {
		t.Error("relative path accepted")
	}
	if err := a.AddFile("/a/../init", 0o755, nil); err == nil {
		t.Error("unclean path accepted")
	}
	if err := a.AddDir("/", 0o755); err == nil {
		t.Error("root accepted")
	}
	if err := a.AddFile("/x", 0o644, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.AddFile("/x", 0o644, nil); err == nil {
		t.Error("duplicate accepted")
	}
	if err := a.AddFile("/x/y", 0o644, nil); err == nil {
		t.Error("file below a file accepted")
	}
	if err := a.AddFile("/d/y", 0o644, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.AddFile("/d", 0o644, nil); err == nil {
		t.Error("file over a directory accepted")
	}
	if err := a.AddDir("/d", 0o700); err != nil {
		t.Errorf("explicit mode for an implied dir: %v", err)
	}
	if err := a.AddDir("/d", 0o700); err != nil {
		t.Errorf("same directory twice: %v", err)
	}
	if err := a.AddDir("/d", 0o755); err == nil {
		t.Error("conflicting directory modes accepted")
	}
	for _, r := range parseNewc(t, a.Bytes()) {
		if r.name == "d" && r.mode != 0o40700 {
			t.Errorf("/d mode %o, want 040700", r.mode)
		}
	}
}
