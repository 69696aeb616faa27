// Package testimage builds the busybox test image used by the integration tests and
// the developer environment: a reproducible OCI image-layout tar archive, ready for
// `ctr image import`, made from a static busybox binary (Debian's busybox-static).
//
// The image has one layer holding /bin/busybox, a symlink for every applet, a small
// /etc/passwd and /etc/group (root, gondolin 1000:1000, nobody) and the empty
// directories a container expects. Every timestamp is fixed and every list is sorted,
// so the same busybox gives the same bytes, and so the same digests, every time.
package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/earendil-works/gondolin-containerd/internal/atomicfile"
)

// DefaultName is the name the image is imported under.
const DefaultName = "docker.io/gondolin/busybox:latest"

// DefaultBusybox is where Debian's busybox-static installs the binary.
const DefaultBusybox = "/bin/busybox"

// DefaultModTime is the fixed time used for every file, the config's creation date and
// the layer's history (2024-01-01T00:00:00Z).
var DefaultModTime = time.Unix(1704067200, 0).UTC()

// DefaultPath is the PATH of the image config.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Media types and annotations (OCI image spec v1 and containerd).
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayerGz  = "application/vnd.oci.image.layer.v1.tar+gzip"

	AnnotationRefName   = "org.opencontainers.image.ref.name"
	AnnotationImageName = "io.containerd.image.name"
	AnnotationCreated   = "org.opencontainers.image.created"
)

// Passwd and Group are the contents of /etc/passwd and /etc/group.
const (
	Passwd = "root:x:0:0:root:/root:/bin/sh\n" +
		"gondolin:x:1000:1000:gondolin:/home/gondolin:/bin/sh\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	Group = "root:x:0:\n" +
		"gondolin:x:1000:\n" +
		"nogroup:x:65534:\n"
)

// Options say what to build. The zero value of every field means its default.
type Options struct {
	// Busybox is the path of a static busybox binary (default DefaultBusybox).
	Busybox string
	// Applets are the applet paths relative to / ("bin/sh", "usr/bin/id", ...), as
	// `busybox --list-full` prints them. Nil means: ask the busybox binary.
	Applets []string
	// Name is the full image name (default DefaultName).
	Name string
	// ModTime is the time stamped on everything (default DefaultModTime).
	ModTime time.Time
	// Cmd is the image's command (default ["sh"]).
	Cmd []string
}

// PauseName and PauseCmd make the pause image of the tests' CRI pods (the
// sandbox image containerd's CRI plugin runs first in every pod): the same
// busybox, whose shell as PID 1 reaps orphans, as a pause process does, and
// exits on SIGTERM or SIGINT.
const PauseName = "docker.io/gondolin/pause:latest"

// PauseCmd is the pause image's command. Its timer runs as /bin/busybox, so
// that its name is "busybox", not "sleep": the pod's other containers share
// its PID namespace, and critest's execSync timeout spec takes any process
// named sleep (pgrep sleep) for the exec it timed out, left running.
var PauseCmd = []string{"/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do /bin/busybox sleep 3600 & wait $!; done"}

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
}

// Platform is an OCI platform.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// Index is an OCI image index (index.json).
type Index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

// Manifest is an OCI image manifest.
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// ImageConfig is the execution part of an OCI image config.
type ImageConfig struct {
	Env        []string `json:"Env,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

// RootFS lists the layers' uncompressed digests.
type RootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

// History is one entry of an image's history.
type History struct {
	Created   string `json:"created,omitempty"`
	CreatedBy string `json:"created_by,omitempty"`
	Comment   string `json:"comment,omitempty"`
}

// Image is an OCI image config.
type Image struct {
	Created      string      `json:"created,omitempty"`
	Architecture string      `json:"architecture"`
	OS           string      `json:"os"`
	Config       ImageConfig `json:"config"`
	RootFS       RootFS      `json:"rootfs"`
	History      []History   `json:"history,omitempty"`
}

// Result describes what Build wrote.
type Result struct {
	Name     string
	Manifest Descriptor
	Config   Descriptor
	Layer    Descriptor
	DiffID   string
	Applets  int
}

// ListApplets runs `busybox --list-full` and returns the applet paths it prints.
func ListApplets(busybox string) ([]string, error) {
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("listing applets with %s --list-full: %w", busybox, err)
	}
	applets := strings.Fields(string(out))
	if len(applets) == 0 {
		return nil, fmt.Errorf("%s --list-full printed no applets", busybox)
	}
	return applets, nil
}

// Build writes the image as an OCI image-layout tar archive to w.
func Build(w io.Writer, opts Options) (*Result, error) {
	if opts.Busybox == "" {
		opts.Busybox = DefaultBusybox
	}
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if opts.ModTime.IsZero() {
		opts.ModTime = DefaultModTime
	}
	if len(opts.Cmd) == 0 {
		opts.Cmd = []string{"sh"}
	}
	opts.ModTime = opts.ModTime.UTC().Truncate(time.Second)
	if _, err := RefName(opts.Name); err != nil {
		return nil, err
	}
	bb, err := os.ReadFile(opts.Busybox)
	if err != nil {
		return nil, fmt.Errorf("reading busybox: %w (install busybox-static: make deps)", err)
	}
	if opts.Applets == nil {
		if opts.Applets, err = ListApplets(opts.Busybox); err != nil {
			return nil, err
		}
	}

	entries, nlinks, err := rootfsEntries(bb, opts.Applets)
	if err != nil {
		return nil, err
	}
	layerTar, err := writeTar(entries, opts.ModTime)
	if err != nil {
		return nil, fmt.Errorf("writing layer: %w", err)
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(layerTar); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	layer := gz.Bytes()

	res := &Result{Name: opts.Name, DiffID: digest(layerTar), Applets: nlinks}
	res.Layer = describe(MediaTypeLayerGz, layer)
	lr, err := WriteLayout(w, Meta{
		Name:    opts.Name,
		Created: opts.ModTime,
		Config: ImageConfig{
			Env:        []string{"PATH=" + DefaultPath},
			Cmd:        opts.Cmd,
			WorkingDir: "/",
		},
		History: History{
			CreatedBy: "gondolin mktestimage",
			Comment:   fmt.Sprintf("static busybox (sha256:%s) with %d applet links", sha(bb), nlinks),
		},
	}, Layer{Desc: res.Layer, DiffID: res.DiffID, Data: layer})
	if err != nil {
		return nil, err
	}
	res.Config, res.Manifest = lr.Config, lr.Manifest
	return res, nil
}

// WriteFile builds the image into the file at path, atomically (a temporary file in the
// same directory renamed over it).
func WriteFile(path string, opts Options) (*Result, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	var res *Result
	err := atomicfile.Write(path, 0o644, func(w io.Writer) (err error) {
		res, err = Build(w, opts)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

type entry struct {
	name     string
	typ      byte
	mode     int64
	uid, gid int
	data     []byte
	link     string
}

// rootfsEntries lists the layer's contents, sorted by name. It returns the number of
// applet symlinks too.
func rootfsEntries(busybox []byte, applets []string) ([]entry, int, error) {
	dirs := map[string]int64{
		"bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o555,
		"root": 0o700, "run": 0o755, "sbin": 0o755, "sys": 0o555, "tmp": 0o1777,
		"usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "var": 0o755,
	}
	es := map[string]entry{
		"bin/busybox":   {typ: tar.TypeReg, mode: 0o755, data: busybox},
		"etc/passwd":    {typ: tar.TypeReg, mode: 0o644, data: []byte(Passwd)},
		"etc/group":     {typ: tar.TypeReg, mode: 0o644, data: []byte(Group)},
		"home/gondolin": {typ: tar.TypeDir, mode: 0o755, uid: 1000, gid: 1000},
	}
	for d, m := range dirs {
		es[d] = entry{typ: tar.TypeDir, mode: m}
	}

	links := map[string]bool{}
	addLink := func(p string) {
		if _, ok := es[p]; ok {
			return // busybox itself, or already linked
		}
		es[p] = entry{typ: tar.TypeSymlink, mode: 0o777, link: relTo(p, "bin/busybox")}
		links[p] = true
	}
	for _, a := range applets {
		a = strings.TrimPrefix(path.Clean("/"+a), "/")
		base := path.Base(a)
		if a == "" || base == "busybox" || strings.ContainsAny(base, " \t") {
			continue
		}
		// Every applet in /bin, so that /bin/<applet> always works whatever PATH is...
		addLink("bin/" + base)
		// ...and where busybox says it belongs, if that is one of the usual directories.
		switch path.Dir(a) {
		case "sbin", "usr/bin", "usr/sbin":
			addLink(a)
		}
	}
	for _, must := range []string{"bin/sh", "bin/true", "bin/cat", "bin/sleep", "bin/id"} {
		if !links[must] {
			return nil, 0, fmt.Errorf("busybox has no %s applet", path.Base(must))
		}
	}

	names := make([]string, 0, len(es))
	for n := range es {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]entry, 0, len(names))
	for _, n := range names {
		e := es[n]
		e.name = n
		out = append(out, e)
	}
	return out, len(links), nil
}

// relTo returns the relative symlink target from the entry at from to the file at to
// (both relative to /): relTo("usr/bin/id", "bin/busybox") = "../../bin/busybox".
func relTo(from, to string) string {
	depth := strings.Count(from, "/")
	if depth == 0 {
		return to
	}
	if path.Dir(from) == path.Dir(to) {
		return path.Base(to)
	}
	return strings.Repeat("../", depth) + to
}

func writeTar(entries []entry, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Typeflag: e.typ,
			Name:     e.name,
			Linkname: e.link,
			Mode:     e.mode,
			Uid:      e.uid,
			Gid:      e.gid,
			ModTime:  mtime,
		}
		switch e.typ {
		case tar.TypeDir:
			h.Name += "/"
		case tar.TypeReg:
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("%s: %w", e.name, err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				return nil, fmt.Errorf("%s: %w", e.name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func digest(b []byte) string { return "sha256:" + sha(b) }
