package distroimage

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/earendil-works/gondolin-containerd/integration/testimage"
)

const fakeStatus = `Package: base-files
Status: install ok installed
Version: 12.4+deb12u99

Package: curl
Status: install ok installed
Version: 7.88.1-10+deb12u99

Package: ca-certificates
Status: install ok installed
Version: 20230311+deb12u1

Package: removed-thing
Status: deinstall ok config-files
Version: 1.0
`

// fakeBootstrap writes a small, fixed tree instead of running debootstrap.
type fakeBootstrap struct {
	version string
	runs    int
	fail    error
}

func (f *fakeBootstrap) Version(context.Context) (string, error) { return f.version, nil }

func (f *fakeBootstrap) Bootstrap(_ context.Context, _ *Options, dir string, log io.Writer) error {
	f.runs++
	fmt.Fprintln(log, "I: fake bootstrap")
	if f.fail != nil {
		return f.fail
	}
	for name, content := range map[string]string{
		"usr/bin/bash":            "bash",
		"usr/bin/curl":            "curl",
		"var/lib/dpkg/status":     fakeStatus,
		CABundle:                  "-----BEGIN CERTIFICATE-----\n",
		"var/lib/apt/lists/Junk":  "lists",
		"var/log/dpkg.log":        "log",
		"usr/share/doc/curl/NEWS": "news",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			return err
		}
	}
	return os.Symlink("usr/bin", filepath.Join(dir, "bin"))
}

func testOptions(t *testing.T, fb *fakeBootstrap) Options {
	return Options{
		CacheDir:     t.TempDir(),
		Bootstrapper: fb,
		Check:        func(context.Context, string) error { return nil },
		Log:          t.Logf,
	}
}

func ensure(t *testing.T, opts Options) *Result {
	t.Helper()
	res, err := Ensure(context.Background(), opts)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	return res
}

func TestEnsureBuildsOnceThenUsesTheCache(t *testing.T) {
	fb := &fakeBootstrap{version: "fake 1"}
	opts := testOptions(t, fb)
	first := ensure(t, opts)
	if first.Cached || fb.runs != 1 {
		t.Fatalf("first Ensure: cached %v after %d bootstrap runs; want a build", first.Cached, fb.runs)
	}
	wantPath := filepath.Join(opts.CacheDir, "debian-curl-"+first.Key[:16]+"-oci.tar")
	if first.Path != wantPath || first.Name != DefaultName {
		t.Errorf("built %s at %s, want %s at %s", first.Name, first.Path, DefaultName, wantPath)
	}
	if first.Packages["curl"] != "7.88.1-10+deb12u99" || first.Packages["base-files"] != "12.4+deb12u99" {
		t.Errorf("packages %v", first.Packages)
	}

	second := ensure(t, opts)
	if !second.Cached || fb.runs != 1 {
		t.Fatalf("second Ensure: cached %v after %d bootstrap runs; want the cache", second.Cached, fb.runs)
	}
	if second.Digest != first.Digest || second.Path != first.Path || second.Size != first.Size {
		t.Errorf("cached %+v, built %+v", second, first)
	}
	assertNoBuildLeftovers(t, opts.CacheDir)
}

func TestEnsureRebuildsDamagedOrForced(t *testing.T) {
	fb := &fakeBootstrap{version: "fake 1"}
	opts := testOptions(t, fb)
	first := ensure(t, opts)

	must(t, os.Truncate(first.Path, first.Size-1))
	again := ensure(t, opts)
	if again.Cached || fb.runs != 2 {
		t.Fatalf("damaged archive: cached %v after %d runs; want a rebuild", again.Cached, fb.runs)
	}
	// Packing is deterministic: the same tree gives the same image.
	if again.Digest != first.Digest {
		t.Errorf("rebuild of the same tree: digest %s, first %s", again.Digest, first.Digest)
	}

	opts.Force = true
	if forced := ensure(t, opts); forced.Cached || fb.runs != 3 {
		t.Fatalf("Force: cached %v after %d runs; want a rebuild", forced.Cached, fb.runs)
	}
}

func TestEnsureNewKeyPrunesTheOld(t *testing.T) {
	fb := &fakeBootstrap{version: "fake 1"}
	opts := testOptions(t, fb)
	old := ensure(t, opts)
	others := []string{"busybox-oci.tar", "debian-curl-extra-oci.tar", "debian-curl-0123456789abcdef-notes.txt"}
	for _, n := range others {
		must(t, os.WriteFile(filepath.Join(opts.CacheDir, n), nil, 0o644))
	}

	fb.version = "fake 2" // a new debootstrap: a new key
	res := ensure(t, opts)
	if res.Cached || res.Key == old.Key {
		t.Fatalf("new tool version: cached %v, key %s (old %s)", res.Cached, res.Key, old.Key)
	}
	for _, gone := range []string{old.Path, strings.TrimSuffix(old.Path, "-oci.tar") + ".json"} {
		if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s of the old key is still there (%v)", filepath.Base(gone), err)
		}
	}
	for _, n := range others {
		if _, err := os.Stat(filepath.Join(opts.CacheDir, n)); err != nil {
			t.Errorf("prune removed %s, which is not one of its files: %v", n, err)
		}
	}

	opts.Mirror = "http://snapshot.debian.org/archive/debian/20250520T000000Z"
	if k := ensure(t, opts).Key; k == res.Key {
		t.Error("another mirror gave the same key")
	}
}

func TestEnsureFailedBootstrapLeavesNothing(t *testing.T) {
	fb := &fakeBootstrap{version: "fake 1", fail: errors.New("mirror unreachable")}
	opts := testOptions(t, fb)
	if _, err := Ensure(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "mirror unreachable") {
		t.Fatalf("Ensure = %v, want the bootstrap error", err)
	}
	assertNoBuildLeftovers(t, opts.CacheDir)
	if m, _ := filepath.Glob(filepath.Join(opts.CacheDir, "*-oci.tar")); len(m) > 0 {
		t.Errorf("archive written after a failure: %v", m)
	}
}

func TestEnsureRejectsNameWithoutTag(t *testing.T) {
	opts := testOptions(t, &fakeBootstrap{})
	opts.Name = "docker.io/gondolin/debian-curl"
	if _, err := Ensure(context.Background(), opts); err == nil {
		t.Fatal("Ensure accepted an image name without a tag")
	}
}

func assertNoBuildLeftovers(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".build-") || strings.Contains(e.Name(), ".tar.") || strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("left in the cache: %s", e.Name())
		}
	}
}

func TestArchiveIsAnImportableLayout(t *testing.T) {
	opts := testOptions(t, &fakeBootstrap{version: "fake 1"})
	res := ensure(t, opts)
	f, err := os.Open(res.Path)
	must(t, err)
	defer f.Close()
	files := testimage.ByName(readTar(t, f))

	blobs := map[string][]byte{}
	for name, f := range files {
		if hexDigest, ok := strings.CutPrefix(name, "blobs/sha256/"); ok && hexDigest != "" {
			if got := sha256hex(f.Data); got != hexDigest {
				t.Errorf("blob %s has digest %s", name, got)
			}
			blobs["sha256:"+hexDigest] = f.Data
		}
	}
	if len(blobs) != 3 {
		t.Fatalf("want 3 blobs, got %d", len(blobs))
	}
	var idx testimage.Index
	must(t, json.Unmarshal(files["index.json"].Data, &idx))
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != res.Digest ||
		idx.Manifests[0].Annotations[testimage.AnnotationImageName] != DefaultName ||
		idx.Manifests[0].Annotations[testimage.AnnotationRefName] != "latest" {
		t.Fatalf("index.json = %s", files["index.json"].Data)
	}
	var m testimage.Manifest
	must(t, json.Unmarshal(blobs[res.Digest], &m))
	var cfg testimage.Image
	must(t, json.Unmarshal(blobs[m.Config.Digest], &cfg))
	if len(m.Layers) != 1 || m.Layers[0].MediaType != testimage.MediaTypeLayerGz {
		t.Fatalf("manifest layers %+v", m.Layers)
	}
	if strings.Join(cfg.Config.Cmd, " ") != "/bin/bash" || cfg.Config.Env[0] != "PATH="+testimage.DefaultPath {
		t.Errorf("config %+v", cfg.Config)
	}
	if !strings.Contains(cfg.History[0].Comment, "curl 7.88.1-10+deb12u99") {
		t.Errorf("history %+v does not name the package versions", cfg.History)
	}

	zr, err := gzip.NewReader(bytes.NewReader(blobs[m.Layers[0].Digest]))
	must(t, err)
	layer, err := io.ReadAll(zr)
	must(t, err)
	if diffID := "sha256:" + sha256hex(layer); len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != diffID {
		t.Errorf("diff_ids %v, layer tar is %s", cfg.RootFS.DiffIDs, diffID)
	}
	entries := testimage.ByName(readTar(t, bytes.NewReader(layer)))
	for _, want := range []string{"bin", "usr/bin/bash", CABundle, "var/lib/apt/lists/", "var/log/dpkg.log"} {
		if _, ok := entries[want]; !ok {
			t.Errorf("layer has no %s", want)
		}
	}
	for _, gone := range []string{"var/lib/apt/lists/Junk", "usr/share/doc/curl/NEWS"} {
		if _, ok := entries[gone]; ok {
			t.Errorf("layer has %s, which minimize should have removed", gone)
		}
	}
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
