package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

var fakeApplets = []string{
	"bin/sh", "bin/true", "bin/cat", "bin/sleep", "bin/busybox", "bin/ps", "bin/hostname",
	"usr/bin/id", "usr/bin/uname", "usr/bin/sha256sum", "bin/stty", "sbin/init", "linuxrc",
	"usr/sbin/chroot", "bin/[",
}

func fakeBusybox(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "busybox")
	if err := os.WriteFile(p, []byte("\x7fELF not really busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func build(t *testing.T, opts Options) ([]byte, *Result) {
	t.Helper()
	var buf bytes.Buffer
	res, err := Build(&buf, opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return buf.Bytes(), res
}

type tarFile = TarFile

// readTar returns the archive's entries in order (testimage.ReadTar).
func readTar(t *testing.T, r io.Reader) []tarFile {
	t.Helper()
	files, err := ReadTar(r)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func assertSorted(t *testing.T, what string, files []tarFile) {
	t.Helper()
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = strings.TrimSuffix(f.Hdr.Name, "/")
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("%s entries are not sorted: %v", what, names)
	}
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestBuildIsReproducible(t *testing.T) {
	bb := fakeBusybox(t)
	a, ra := build(t, Options{Busybox: bb, Applets: fakeApplets})
	b, rb := build(t, Options{Busybox: bb, Applets: fakeApplets})
	if !bytes.Equal(a, b) {
		t.Fatal("two builds from the same input differ")
	}
	if ra.Manifest.Digest != rb.Manifest.Digest {
		t.Fatalf("manifest digests differ: %s vs %s", ra.Manifest.Digest, rb.Manifest.Digest)
	}
	_, rc := build(t, Options{Busybox: bb, Applets: fakeApplets, ModTime: DefaultModTime.Add(time.Hour)})
	if rc.Manifest.Digest == ra.Manifest.Digest {
		t.Fatal("a different ModTime gave the same digest")
	}
}

func TestBuildLayout(t *testing.T) {
	bb := fakeBusybox(t)
	archive, res := build(t, Options{Busybox: bb, Applets: fakeApplets})
	outer := readTar(t, bytes.NewReader(archive))
	assertSorted(t, "image layout", outer)
	files := ByName(outer)
	for _, f := range outer {
		if !f.Hdr.ModTime.Equal(DefaultModTime) {
			t.Errorf("%s: mtime %v, want %v", f.Hdr.Name, f.Hdr.ModTime, DefaultModTime)
		}
	}

	if got := string(files["oci-layout"].Data); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", got)
	}
	// Every blob is named by its digest.
	blobs := map[string][]byte{}
	for name, f := range files {
		if strings.HasPrefix(name, "blobs/sha256/") && f.Hdr.Typeflag == tar.TypeReg {
			d := "sha256:" + strings.TrimPrefix(name, "blobs/sha256/")
			if sum(f.Data) != d {
				t.Errorf("blob %s has digest %s", name, sum(f.Data))
			}
			blobs[d] = f.Data
		}
	}
	if len(blobs) != 3 {
		t.Errorf("want 3 blobs (manifest, config, layer), got %d", len(blobs))
	}

	var idx Index
	if err := json.Unmarshal(files["index.json"].Data, &idx); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if idx.SchemaVersion != 2 || idx.MediaType != MediaTypeIndex || len(idx.Manifests) != 1 {
		t.Fatalf("index.json = %+v", idx)
	}
	md := idx.Manifests[0]
	if md.Digest != res.Manifest.Digest || md.MediaType != MediaTypeManifest {
		t.Errorf("index points at %s %s, want manifest %s", md.MediaType, md.Digest, res.Manifest.Digest)
	}
	if got := md.Annotations[AnnotationImageName]; got != DefaultName {
		t.Errorf("%s = %q, want %q", AnnotationImageName, got, DefaultName)
	}
	if got := md.Annotations[AnnotationRefName]; got != "latest" {
		t.Errorf("%s = %q, want latest", AnnotationRefName, got)
	}
	if md.Platform == nil || md.Platform.OS != "linux" || md.Platform.Architecture != "amd64" {
		t.Errorf("platform = %+v", md.Platform)
	}

	var m Manifest
	if err := json.Unmarshal(blobs[md.Digest], &m); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if m.SchemaVersion != 2 || m.MediaType != MediaTypeManifest || m.Config.MediaType != MediaTypeConfig ||
		len(m.Layers) != 1 || m.Layers[0].MediaType != MediaTypeLayerGz {
		t.Fatalf("manifest = %+v", m)
	}
	for _, d := range append([]Descriptor{m.Config}, m.Layers...) {
		if b, ok := blobs[d.Digest]; !ok || int64(len(b)) != d.Size {
			t.Errorf("descriptor %s (size %d) does not match a blob", d.Digest, d.Size)
		}
	}

	var img Image
	if err := json.Unmarshal(blobs[m.Config.Digest], &img); err != nil {
		t.Fatalf("config: %v", err)
	}
	if img.OS != "linux" || img.Architecture != "amd64" {
		t.Errorf("config platform %s/%s", img.OS, img.Architecture)
	}
	if strings.Join(img.Config.Cmd, " ") != "sh" {
		t.Errorf("Cmd = %q, want [sh]", img.Config.Cmd)
	}
	if len(img.Config.Env) != 1 || img.Config.Env[0] != "PATH="+DefaultPath {
		t.Errorf("Env = %q", img.Config.Env)
	}

	zr, err := gzip.NewReader(bytes.NewReader(blobs[m.Layers[0].Digest]))
	if err != nil {
		t.Fatal(err)
	}
	layerTar, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if img.RootFS.Type != "layers" || len(img.RootFS.DiffIDs) != 1 || img.RootFS.DiffIDs[0] != sum(layerTar) {
		t.Errorf("rootfs = %+v, layer diff id %s", img.RootFS, sum(layerTar))
	}
	checkRootfs(t, readTar(t, bytes.NewReader(layerTar)), len(fakeApplets)-2)
}

func checkRootfs(t *testing.T, layer []tarFile, minLinks int) {
	t.Helper()
	assertSorted(t, "layer", layer)
	files := ByName(layer)

	bb, ok := files["bin/busybox"]
	if !ok || bb.Hdr.Typeflag != tar.TypeReg || bb.Hdr.Mode != 0o755 {
		t.Fatalf("bin/busybox missing or wrong: %+v", bb.Hdr)
	}
	links := map[string]string{
		"bin/sh": "busybox", "bin/true": "busybox", "bin/cat": "busybox", "bin/sleep": "busybox",
		"bin/id": "busybox", "bin/uname": "busybox", "bin/sha256sum": "busybox", "bin/stty": "busybox",
		"bin/ps": "busybox", "bin/hostname": "busybox",
		"usr/bin/id": "../../bin/busybox", "sbin/init": "../bin/busybox",
	}
	for name, target := range links {
		f, ok := files[name]
		if !ok || f.Hdr.Typeflag != tar.TypeSymlink || f.Hdr.Linkname != target {
			t.Errorf("%s: want symlink to %s, got %+v", name, target, f.Hdr)
		}
	}
	nlinks := 0
	for _, f := range layer {
		if f.Hdr.Typeflag == tar.TypeSymlink {
			nlinks++
		}
		if f.Hdr.Uid != 0 && f.Hdr.Name != "home/gondolin/" {
			t.Errorf("%s owned by %d", f.Hdr.Name, f.Hdr.Uid)
		}
	}
	if nlinks < minLinks {
		t.Errorf("%d applet links, want at least %d", nlinks, minLinks)
	}
	if _, ok := files["linuxrc"]; ok {
		t.Error("linuxrc at the root: only applets in bin and sbin dirs get their own path")
	}

	dirs := map[string]int64{
		"proc/": 0o555, "sys/": 0o555, "dev/": 0o755, "tmp/": 0o1777, "root/": 0o700,
		"etc/": 0o755, "run/": 0o755, "usr/bin/": 0o755, "sbin/": 0o755,
	}
	for name, mode := range dirs {
		f, ok := files[name]
		if !ok || f.Hdr.Typeflag != tar.TypeDir || f.Hdr.Mode != mode {
			t.Errorf("%s: want dir mode %o, got %+v", name, mode, f.Hdr)
		}
	}
	if h := files["home/gondolin/"].Hdr; h == nil || h.Uid != 1000 || h.Gid != 1000 {
		t.Errorf("home/gondolin/ not owned by 1000:1000: %+v", h)
	}
	passwd := string(files["etc/passwd"].Data)
	for _, want := range []string{"root:x:0:0:", "gondolin:x:1000:1000:", "nobody:x:65534:65534:"} {
		if !strings.Contains(passwd, want) {
			t.Errorf("/etc/passwd lacks %q:\n%s", want, passwd)
		}
	}
	group := string(files["etc/group"].Data)
	for _, want := range []string{"root:x:0:", "gondolin:x:1000:"} {
		if !strings.Contains(group, want) {
			t.Errorf("/etc/group lacks %q:\n%s", want, group)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	bb := fakeBusybox(t)
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no tag", Options{Busybox: bb, Applets: fakeApplets, Name: "docker.io/gondolin/busybox"}, "no tag"},
		{"digest", Options{Busybox: bb, Applets: fakeApplets, Name: "docker.io/gondolin/busybox@sha256:00"}, "digest"},
		{"no shell", Options{Busybox: bb, Applets: []string{"bin/true", "bin/cat", "bin/sleep", "bin/id"}}, "no sh applet"},
		{"no busybox", Options{Busybox: filepath.Join(t.TempDir(), "nope"), Applets: fakeApplets}, "busybox-static"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(io.Discard, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestWriteFile(t *testing.T) {
	bb := fakeBusybox(t)
	out := filepath.Join(t.TempDir(), "sub", "image.tar")
	res, err := WriteFile(out, Options{Busybox: bb, Applets: fakeApplets})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := build(t, Options{Busybox: bb, Applets: fakeApplets})
	if !bytes.Equal(got, want) {
		t.Error("WriteFile wrote something other than Build")
	}
	if res.Manifest.Digest == "" {
		t.Error("no manifest digest")
	}
	entries, _ := os.ReadDir(filepath.Dir(out))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

// TestRealBusybox packages the host's static busybox, when there is one.
func TestRealBusybox(t *testing.T) {
	if _, err := os.Stat(DefaultBusybox); err != nil {
		t.Skipf("no %s (install busybox-static)", DefaultBusybox)
	}
	if out, err := exec.Command("file", "-L", DefaultBusybox).Output(); err == nil && !bytes.Contains(out, []byte("statically linked")) {
		t.Skipf("%s is not static: %s", DefaultBusybox, out)
	}
	applets, err := ListApplets(DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	archive, res := build(t, Options{})
	files := ByName(readTar(t, bytes.NewReader(archive)))
	layer := files["blobs/sha256/"+strings.TrimPrefix(res.Layer.Digest, "sha256:")]
	zr, err := gzip.NewReader(bytes.NewReader(layer.Data))
	if err != nil {
		t.Fatal(err)
	}
	checkRootfs(t, readTar(t, zr), len(applets)-1)
	again, _ := build(t, Options{})
	if !bytes.Equal(archive, again) {
		t.Error("two builds from the real busybox differ")
	}
}
