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
	"slices"
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
	// Cmd is the image's command (default ["sh"], or none with an Entrypoint).
	Cmd []string
	// Entrypoint and User go into the image config as they are (none by default).
	Entrypoint []string
	User       string
	// Passwd and Group replace the contents of /etc/passwd and /etc/group
	// (default: the package's Passwd and Group).
	Passwd, Group string
	// Files are added to the layer besides busybox and its applet links; their
	// parent directories are made (0755, root) where the layer has none. A path
	// the layer has already is refused.
	Files []File
	// HardLinks makes the applets hard links to /bin/busybox, as the upstream
	// busybox image has them, instead of symlinks: a container's masked path
	// (maskedPaths /bin/ls) then hides that name alone, where masking a
	// symlink would mask busybox itself. The archive then has bin/busybox
	// first, ahead of the links to it.
	HardLinks bool
	// Description, when set, is added to the layer's history comment: images
	// that differ only in it get configs, and so image IDs, of their own.
	Description string
	// Layers, when set, keeps the compressed layers of earlier builds: a build
	// whose layer has the same contents takes it from there instead of
	// compressing it again.
	Layers *LayerCache
}

// LayerCache holds compressed layers by the digest of their uncompressed tar
// (Options.Layers). The zero value is not usable: make one with NewLayerCache.
type LayerCache struct {
	gz map[string][]byte
}

// NewLayerCache returns an empty LayerCache.
func NewLayerCache() *LayerCache { return &LayerCache{gz: map[string][]byte{}} }

// File is a file, directory or symlink that Options.Files adds to the image.
type File struct {
	Path     string // relative to /, e.g. "usr/sbin/nginx"
	Mode     int64  // permission bits, with setuid/setgid/sticky (04755)
	UID, GID int
	Data     []byte // a regular file's contents
	Link     string // a symlink's target: the file is a symlink when set
	Dir      bool   // a directory
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
	User       string   `json:"User,omitempty"`
	Env        []string `json:"Env,omitempty"`
	Entrypoint []string `json:"Entrypoint,omitempty"`
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
	res, meta, layer, err := prepare(opts)
	if err != nil {
		return nil, err
	}
	lr, err := WriteLayout(w, meta, layer)
	if err != nil {
		return nil, err
	}
	res.Config, res.Manifest = lr.Config, lr.Manifest
	return res, nil
}

// Blobs are an image's config, manifest and layer, what a registry stores.
type Blobs struct {
	Result
	ConfigJSON, ManifestJSON []byte
	LayerData                []byte // the compressed layer (Result.Layer)
}

// BuildBlobs builds the image as Build does, for pushing to a registry
// (Push): the same options give the same digests as Build.
func BuildBlobs(opts Options) (*Blobs, error) {
	res, meta, layer, err := prepare(opts)
	if err != nil {
		return nil, err
	}
	a, err := Assemble(meta, layer)
	if err != nil {
		return nil, err
	}
	res.Config, res.Manifest = a.Config, a.Manifest
	return &Blobs{Result: *res, ConfigJSON: a.ConfigJSON, ManifestJSON: a.ManifestJSON, LayerData: layer.Data}, nil
}

// prepare builds the layer and says what the config holds.
func prepare(opts Options) (*Result, Meta, Layer, error) {
	if opts.Busybox == "" {
		opts.Busybox = DefaultBusybox
	}
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if opts.ModTime.IsZero() {
		opts.ModTime = DefaultModTime
	}
	if len(opts.Cmd) == 0 && len(opts.Entrypoint) == 0 {
		opts.Cmd = []string{"sh"}
	}
	if opts.Passwd == "" {
		opts.Passwd = Passwd
	}
	if opts.Group == "" {
		opts.Group = Group
	}
	opts.ModTime = opts.ModTime.UTC().Truncate(time.Second)
	if _, err := RefName(opts.Name); err != nil {
		return nil, Meta{}, Layer{}, err
	}
	bb, err := os.ReadFile(opts.Busybox)
	if err != nil {
		return nil, Meta{}, Layer{}, fmt.Errorf("reading busybox: %w (install busybox-static: make deps)", err)
	}
	if opts.Applets == nil {
		if opts.Applets, err = ListApplets(opts.Busybox); err != nil {
			return nil, Meta{}, Layer{}, err
		}
	}

	entries, nlinks, err := rootfsEntries(bb, opts)
	if err != nil {
		return nil, Meta{}, Layer{}, err
	}
	layerTar, err := writeTar(entries, opts.ModTime)
	if err != nil {
		return nil, Meta{}, Layer{}, fmt.Errorf("writing layer: %w", err)
	}
	diffID := digest(layerTar)
	data, ok := []byte(nil), false
	if opts.Layers != nil {
		data, ok = opts.Layers.gz[diffID]
	}
	if !ok {
		if data, err = compress(layerTar); err != nil {
			return nil, Meta{}, Layer{}, err
		}
		if opts.Layers != nil {
			opts.Layers.gz[diffID] = data
		}
	}

	res := &Result{Name: opts.Name, DiffID: diffID, Applets: nlinks}
	res.Layer = describe(MediaTypeLayerGz, data)
	comment := fmt.Sprintf("static busybox (sha256:%s) with %d applet links", sha(bb), nlinks)
	if opts.Description != "" {
		comment += "; " + opts.Description
	}
	meta := Meta{
		Name:    opts.Name,
		Created: opts.ModTime,
		Config: ImageConfig{
			User:       opts.User,
			Env:        []string{"PATH=" + DefaultPath},
			Entrypoint: opts.Entrypoint,
			Cmd:        opts.Cmd,
			WorkingDir: "/",
		},
		History: History{
			CreatedBy: "gondolin mktestimage",
			Comment:   comment,
		},
	}
	return res, meta, Layer{Desc: res.Layer, DiffID: res.DiffID, Data: data}, nil
}

// compress gzips a layer, with the best compression (the test images are
// built rarely and imported often).
func compress(layerTar []byte) ([]byte, error) {
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
	return gz.Bytes(), nil
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
func rootfsEntries(busybox []byte, opts Options) ([]entry, int, error) {
	applets := opts.Applets
	dirs := map[string]int64{
		"bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o555,
		"root": 0o700, "run": 0o755, "sbin": 0o755, "sys": 0o555, "tmp": 0o1777,
		"usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "var": 0o755,
	}
	es := map[string]entry{
		"bin/busybox":   {typ: tar.TypeReg, mode: 0o755, data: busybox},
		"etc/passwd":    {typ: tar.TypeReg, mode: 0o644, data: []byte(opts.Passwd)},
		"etc/group":     {typ: tar.TypeReg, mode: 0o644, data: []byte(opts.Group)},
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
		if opts.HardLinks {
			es[p] = entry{typ: tar.TypeLink, mode: 0o755, link: "bin/busybox"}
		} else {
			es[p] = entry{typ: tar.TypeSymlink, mode: 0o777, link: relTo(p, "bin/busybox")}
		}
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
	if err := addFiles(es, opts.Files); err != nil {
		return nil, 0, err
	}

	names := make([]string, 0, len(es))
	for n := range es {
		names = append(names, n)
	}
	sort.Strings(names)
	if opts.HardLinks {
		// A hard link's target must come first: bin and bin/busybox lead.
		names = slices.DeleteFunc(names, func(n string) bool { return n == "bin" || n == "bin/busybox" })
		names = append([]string{"bin", "bin/busybox"}, names...)
	}
	out := make([]entry, 0, len(names))
	for _, n := range names {
		e := es[n]
		e.name = n
		out = append(out, e)
	}
	return out, len(links), nil
}

// addFiles adds Options.Files to the layer's entries es, with the parent
// directories they lack.
func addFiles(es map[string]entry, files []File) error {
	for _, f := range files {
		p := path.Clean(f.Path)
		if p == "." || path.IsAbs(p) || p == ".." || strings.HasPrefix(p, "../") {
			return fmt.Errorf("file %q: want a path relative to / inside the image", f.Path)
		}
		if _, ok := es[p]; ok {
			return fmt.Errorf("file %q: the image has %s already (Options.Passwd and Group replace /etc/passwd and /etc/group)", f.Path, p)
		}
		kinds := 0
		e := entry{typ: tar.TypeReg, mode: f.Mode, uid: f.UID, gid: f.GID, data: f.Data}
		if f.Link != "" {
			kinds++
			e = entry{typ: tar.TypeSymlink, mode: 0o777, uid: f.UID, gid: f.GID, link: f.Link}
		}
		if f.Dir {
			kinds++
			e = entry{typ: tar.TypeDir, mode: f.Mode, uid: f.UID, gid: f.GID}
		}
		if kinds > 1 || (kinds == 1 && len(f.Data) > 0) {
			return fmt.Errorf("file %q: give one of Data, Link or Dir", f.Path)
		}
		if e.typ != tar.TypeSymlink && f.Mode&^0o7777 != 0 {
			return fmt.Errorf("file %q: mode %#o has bits beyond 07777", f.Path, f.Mode)
		}
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			have, ok := es[d]
			if !ok {
				es[d] = entry{typ: tar.TypeDir, mode: 0o755}
				continue
			}
			if have.typ != tar.TypeDir {
				return fmt.Errorf("file %q: %s is not a directory in the image", f.Path, d)
			}
		}
		es[p] = e
	}
	return nil
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
