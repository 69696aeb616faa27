package harness

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The bench image: static busybox with all its applets, bench-fetch (the HTTPS
// client), /bench/tree.tar (the metadata job's tree), /scratch (an empty
// directory in the root file system for the jobs to write to), and in a layer
// of its own /bench/read.bin, the file the sequential read job reads cold.
const (
	imageRepo     = "docker.io/gondolin/bench"
	imageVersion  = "1" // bump when the layout below changes
	ReadFilePath  = "/bench/read.bin"
	TreeTarPath   = "/bench/tree.tar"
	ScratchDir    = "/scratch"
	FetchPath     = "/bin/bench-fetch"
	treeDirs      = 100
	benchModTime  = 1704067200 // 2024-01-01, any fixed time
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar" // uncompressed: read.bin is random
)

// ImageSpec says what goes into the bench image.
type ImageSpec struct {
	Busybox   string // path of a static busybox
	Fetch     string // path of the static bench-fetch binary
	FileBytes int64  // size of read.bin
	TreeFiles int    // files in tree.tar
}

// Name returns the image reference, which changes with everything that goes in.
func (s ImageSpec) Name() (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "v%s %d %d\n", imageVersion, s.FileBytes, s.TreeFiles)
	for _, f := range []string{s.Busybox, s.Fetch} {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	return imageRepo + ":" + hex.EncodeToString(h.Sum(nil))[:16], nil
}

// TreeEntries is how many paths `find` lists in the unpacked tree: the top
// directory, its subdirectories and the files.
func TreeEntries(files int) int {
	dirs := min(treeDirs, files)
	return 1 + dirs + files
}

// MakeTree writes the metadata job's tar: files small files (64 B – 2 KiB,
// random content) spread over up to 100 directories.
func MakeTree(w io.Writer, files int) error {
	rng := rand.New(rand.NewChaCha8([32]byte{'t', 'r', 'e', 'e'}))
	tw := tar.NewWriter(w)
	mt := time.Unix(benchModTime, 0)
	dirs := min(treeDirs, files)
	buf := make([]byte, 2048)
	for d := 0; d < dirs; d++ {
		dir := fmt.Sprintf("d%03d/", d)
		if err := tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt, Format: tar.FormatPAX}); err != nil {
			return err
		}
		for f := d; f < files; f += dirs {
			n := 64 + rng.IntN(2048-64)
			for i := range n {
				buf[i] = byte('a' + rng.IntN(26))
			}
			if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("%sf%05d.txt", dir, f), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(n), ModTime: mt, Format: tar.FormatPAX}); err != nil {
				return err
			}
			if _, err := tw.Write(buf[:n]); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// WriteRandomFile writes size bytes of deterministic pseudo-random data
// (incompressible, never all zeros) to w.
func WriteRandomFile(w io.Writer, size int64) error {
	rng := rand.NewChaCha8([32]byte{'r', 'e', 'a', 'd'})
	buf := make([]byte, 1<<20)
	for size > 0 {
		n := min(int64(len(buf)), size)
		_, _ = rng.Read(buf[:n])
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		size -= n
	}
	return nil
}

type tarEntry struct {
	hdr  tar.Header
	data []byte
}

// layerFile writes a layer tar to a temporary file in dir and returns its
// path, digest and size.
func layerFile(dir string, write func(tw *tar.Writer) error) (string, string, int64, error) {
	f, err := os.CreateTemp(dir, "layer-*.tar")
	if err != nil {
		return "", "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	tw := tar.NewWriter(cw)
	if err := write(tw); err != nil {
		return "", "", 0, err
	}
	if err := tw.Close(); err != nil {
		return "", "", 0, err
	}
	return f.Name(), "sha256:" + hex.EncodeToString(h.Sum(nil)), cw.n, f.Close()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// baseEntries lists the small layer: directories, busybox and its applet
// links, bench-fetch, /etc files and the tree tar.
func baseEntries(spec ImageSpec) ([]tarEntry, error) {
	mt := time.Unix(benchModTime, 0)
	bb, err := os.ReadFile(spec.Busybox)
	if err != nil {
		return nil, fmt.Errorf("reading busybox: %w (install busybox-static: make deps)", err)
	}
	fetch, err := os.ReadFile(spec.Fetch)
	if err != nil {
		return nil, fmt.Errorf("reading bench-fetch: %w", err)
	}
	out, err := exec.Command(spec.Busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", spec.Busybox, err)
	}
	var tree bytes.Buffer
	if err := MakeTree(&tree, spec.TreeFiles); err != nil {
		return nil, err
	}
	dirs := map[string]int64{"bin": 0o755, "etc": 0o755, "tmp": 0o1777, "scratch": 0o1777, "bench": 0o755,
		"proc": 0o555, "sys": 0o555, "dev": 0o755, "data": 0o755, "root": 0o700, "run": 0o755}
	files := map[string]tarEntry{
		"bin/busybox":     {hdr: tar.Header{Mode: 0o755}, data: bb},
		"bin/bench-fetch": {hdr: tar.Header{Mode: 0o755}, data: fetch},
		"etc/passwd":      {hdr: tar.Header{Mode: 0o644}, data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		"etc/group":       {hdr: tar.Header{Mode: 0o644}, data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		"bench/tree.tar":  {hdr: tar.Header{Mode: 0o644}, data: tree.Bytes()},
	}
	links := map[string]string{}
	for _, p := range strings.Fields(string(out)) {
		p = strings.TrimPrefix(path.Clean(p), "/")
		if _, ok := files[p]; ok || p == "" {
			continue
		}
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := dirs[d]; !ok {
				dirs[d] = 0o755
			}
		}
		links[p] = "/bin/busybox"
	}
	var entries []tarEntry
	for d, mode := range dirs {
		entries = append(entries, tarEntry{hdr: tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: mode}})
	}
	for name, e := range files {
		e.hdr.Name, e.hdr.Typeflag, e.hdr.Size = name, tar.TypeReg, int64(len(e.data))
		entries = append(entries, e)
	}
	for name, target := range links {
		entries = append(entries, tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].hdr.Name < entries[j].hdr.Name })
	for i := range entries {
		entries[i].hdr.ModTime = mt
		entries[i].hdr.Format = tar.FormatPAX
	}
	return entries, nil
}

// BuildImage writes the bench image as an OCI image layout tar (what `ctr
// images import` reads) to w. Temporary layer files go to tmpDir.
func BuildImage(w io.Writer, spec ImageSpec, tmpDir string) error {
	name, err := spec.Name()
	if err != nil {
		return err
	}
	entries, err := baseEntries(spec)
	if err != nil {
		return err
	}
	base, baseDigest, baseSize, err := layerFile(tmpDir, func(tw *tar.Writer) error {
		for _, e := range entries {
			hdr := e.hdr
			if err := tw.WriteHeader(&hdr); err != nil {
				return err
			}
			if _, err := tw.Write(e.data); err != nil {
				return err
			}
		}
		return nil
	})
	if base != "" {
		defer os.Remove(base)
	}
	if err != nil {
		return fmt.Errorf("writing the base layer: %w", err)
	}
	mt := time.Unix(benchModTime, 0)
	data, dataDigest, dataSize, err := layerFile(tmpDir, func(tw *tar.Writer) error {
		if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(ReadFilePath, "/"), Typeflag: tar.TypeReg, Mode: 0o644, Size: spec.FileBytes, ModTime: mt, Format: tar.FormatPAX}); err != nil {
			return err
		}
		return WriteRandomFile(tw, spec.FileBytes)
	})
	if data != "" {
		defer os.Remove(data)
	}
	if err != nil {
		return fmt.Errorf("writing the data layer: %w", err)
	}

	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int64             `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
		Platform    map[string]string `json:"platform,omitempty"`
	}
	created := mt.UTC().Format(time.RFC3339)
	config, err := json.Marshal(map[string]any{
		"created": created, "architecture": "amd64", "os": "linux",
		"config": map[string]any{"Env": []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, "Cmd": []string{"sh"}, "WorkingDir": "/"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{baseDigest, dataDigest}},
	})
	if err != nil {
		return err
	}
	configDesc := desc{MediaType: mediaConfig, Digest: digestOf(config), Size: int64(len(config))}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": mediaManifest, "config": configDesc,
		"layers": []desc{{MediaType: mediaLayer, Digest: baseDigest, Size: baseSize}, {MediaType: mediaLayer, Digest: dataDigest, Size: dataSize}},
	})
	if err != nil {
		return err
	}
	manifestDesc := desc{MediaType: mediaManifest, Digest: digestOf(manifest), Size: int64(len(manifest)),
		Annotations: map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name[strings.LastIndex(name, ":")+1:]},
		Platform:    map[string]string{"architecture": "amd64", "os": "linux"}}
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mediaIndex, "manifests": []desc{manifestDesc}})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	blob := func(d string) string { return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:") }
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}); err != nil {
			return err
		}
	}
	small := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blob(configDesc.Digest), config},
		{blob(manifestDesc.Digest), manifest},
	}
	for _, s := range small {
		if err := tw.WriteHeader(&tar.Header{Name: s.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(s.data)), ModTime: mt}); err != nil {
			return err
		}
		if _, err := tw.Write(s.data); err != nil {
			return err
		}
	}
	for _, l := range []struct {
		path, digest string
		size         int64
	}{{base, baseDigest, baseSize}, {data, dataDigest, dataSize}} {
		if err := tw.WriteHeader(&tar.Header{Name: blob(l.digest), Typeflag: tar.TypeReg, Mode: 0o644, Size: l.size, ModTime: mt}); err != nil {
			return err
		}
		f, err := os.Open(l.path)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// EnsureImage builds and imports the bench image unless containerd has it.
// It returns the image name.
func EnsureImage(ctx context.Context, c *Ctr, spec ImageSpec, tmpDir string, logf func(string, ...any)) (string, error) {
	name, err := spec.Name()
	if err != nil {
		return "", err
	}
	out, err := c.Output(ctx, time.Minute, "images", "check", "name=="+name)
	if err == nil {
		// REF TYPE DIGEST STATUS SIZE UNPACKED
		for _, l := range strings.Split(out, "\n")[1:] {
			if f := strings.Fields(l); len(f) > 0 && f[0] == name && strings.Contains(l, "complete") && f[len(f)-1] == "true" {
				return name, nil
			}
		}
	}
	logf("building the bench image %s (%d MiB read file, %d-file tree)", name, spec.FileBytes>>20, spec.TreeFiles)
	start := time.Now()
	f, err := os.CreateTemp(tmpDir, "bench-image-*.tar")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if err := BuildImage(f, spec, tmpDir); err != nil {
		f.Close()
		return "", fmt.Errorf("building the bench image: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if _, err := c.Output(ctx, 15*time.Minute, "images", "import", f.Name()); err != nil {
		return "", fmt.Errorf("importing the bench image: %w", err)
	}
	logf("bench image built and imported in %.0f s", time.Since(start).Seconds())
	return name, nil
}

// SnapshotFiles lists the copies of rel (a path inside the image, such as
// /bench/read.bin) in the overlayfs snapshots under containerd's root: the
// files a container's root file system reads them from.
func SnapshotFiles(containerdRoot, rel string) []string {
	pattern := filepath.Join(containerdRoot, "io.containerd.snapshotter.v1.overlayfs", "snapshots", "*", "fs", rel)
	m, _ := filepath.Glob(pattern)
	return m
}
