// Package distroimage builds the Debian image of the integration tests that need a
// real distribution: bookworm (debootstrap --variant=minbase) with curl and the CA
// certificates, for the egress-policy tests. It is packed as a single-layer OCI
// image-layout tar archive that `ctr image import` accepts, like the busybox image of
// package testimage.
//
// debootstrap's output is not byte-reproducible (it installs whatever the mirror has
// today, and maintainer scripts write timestamps), so the archive is cached: it is
// named by a key over everything that goes into it (this builder's recipe version,
// debootstrap's version, suite, mirror, packages, architecture, image name and mtime)
// and built only when missing. Packing is deterministic: the same tree gives the same
// archive.
package distroimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/earendil-works/gondolin-containerd/integration/testimage"
	"github.com/earendil-works/gondolin-containerd/internal/atomicfile"
)

// Defaults of Options.
const (
	DefaultName  = "docker.io/gondolin/debian-curl:latest"
	DefaultSuite = "bookworm"
	// DefaultMirror is the archive the project's hosts use
	// (/etc/apt/sources.list.d/debian.sources): the only one CI can reach.
	DefaultMirror  = "http://deb.debian.org/debian"
	DefaultKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
	DefaultArch    = "amd64"
)

// DefaultInclude are the packages installed on top of minbase.
var DefaultInclude = []string{"curl", "ca-certificates"}

// Variant is debootstrap's package selection: essential packages and apt only.
const Variant = "minbase"

// CABundle is where ca-certificates puts the bundle curl and OpenSSL read, relative
// to the root.
const CABundle = "etc/ssl/certs/ca-certificates.crt"

// builderVersion changes whenever the recipe changes (debootstrap arguments, what
// minimize strips, how the tree is packed, the image config), so that archives from
// an older recipe are not reused.
const builderVersion = "gondolin-distroimage/1"

// Options say what to build and where to cache it. Zero values mean the defaults.
type Options struct {
	// CacheDir holds the archive, its record and debootstrap's log (required; the
	// project uses .cache/images).
	CacheDir string
	Name     string   // image name with a tag (DefaultName)
	Suite    string   // Debian suite (DefaultSuite)
	Mirror   string   // Debian archive URL (DefaultMirror)
	Keyring  string   // keyring the archive's Release file is verified with (DefaultKeyring)
	Arch     string   // Debian architecture (DefaultArch); the image config says amd64
	Include  []string // packages beyond minbase (DefaultInclude)
	// ModTime is stamped on every file and is the image's creation date
	// (testimage.DefaultModTime).
	ModTime time.Time
	// Force rebuilds even when the cache holds the archive.
	Force bool
	// Bootstrapper builds the tree (Debootstrap{} by default; tests use a fake).
	Bootstrapper Bootstrapper
	// Check vets the minimized tree before it is packed (by default: a shell, the CA
	// bundle, and curl runs in a chroot; tests replace it with one a fake tree passes).
	Check func(ctx context.Context, root string) error
	// Log receives progress messages; nil drops them.
	Log func(format string, args ...any)
}

func (o *Options) setDefaults() error {
	if o.CacheDir == "" {
		return errors.New("no cache directory given")
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.Name, DefaultName)
	def(&o.Suite, DefaultSuite)
	def(&o.Mirror, DefaultMirror)
	def(&o.Keyring, DefaultKeyring)
	def(&o.Arch, DefaultArch)
	if len(o.Include) == 0 {
		o.Include = DefaultInclude
	}
	if o.ModTime.IsZero() {
		o.ModTime = testimage.DefaultModTime
	}
	o.ModTime = o.ModTime.UTC().Truncate(time.Second)
	if o.Bootstrapper == nil {
		o.Bootstrapper = Debootstrap{}
	}
	if o.Check == nil {
		o.Check = checkRootfs
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.Arch != "amd64" {
		return fmt.Errorf("architecture %s: only amd64 is supported (the image config and the guest are amd64)", o.Arch)
	}
	_, err := testimage.RefName(o.Name)
	return err
}

// keyInputs lists everything the archive depends on, one "name=value" per line.
func (o *Options) keyInputs(toolVersion string) []string {
	return []string{
		"builder=" + builderVersion,
		"tool=" + toolVersion,
		"variant=" + Variant,
		"suite=" + o.Suite,
		"mirror=" + o.Mirror,
		"arch=" + o.Arch,
		"include=" + strings.Join(o.Include, ","),
		"name=" + o.Name,
		"mtime=" + o.ModTime.Format(time.RFC3339),
	}
}

// CacheKey is the hex sha256 of the key inputs.
func CacheKey(inputs []string) string {
	s := sha256.Sum256([]byte(strings.Join(inputs, "\n")))
	return hex.EncodeToString(s[:])
}

// Result describes the archive Ensure found or built.
type Result struct {
	Name     string
	Digest   string // of the manifest: what `ctr images ls` shows after import
	Path     string // the OCI image-layout tar archive
	Size     int64  // of the archive
	Key      string // the cache key
	Cached   bool   // true when the archive came from the cache
	Packages map[string]string
	// Bootstrap is how long debootstrap took (the value recorded when it was built).
	Bootstrap time.Duration
}

// record is the cache's note about an archive, written next to it after it is
// complete: no record, or a record that does not match, means no cached archive.
type record struct {
	Key              string            `json:"key"`
	Inputs           []string          `json:"inputs"`
	Name             string            `json:"name"`
	Digest           string            `json:"digest"`
	ArchiveSHA256    string            `json:"archiveSHA256"`
	ArchiveSize      int64             `json:"archiveSize"`
	LayerSize        int64             `json:"layerSize"`
	UncompressedSize int64             `json:"uncompressedSize"`
	Packages         map[string]string `json:"packages"`
	Skipped          []string          `json:"skipped,omitempty"`
	BootstrapSeconds float64           `json:"bootstrapSeconds"`
	BuiltAt          string            `json:"builtAt"`
}

// cachePaths are the files of one cache entry.
type cachePaths struct{ archive, record, log string }

// pathsFor names the cache files after the image's repository and the key, e.g.
// debian-curl-0123456789abcdef-oci.tar.
func pathsFor(dir, name, key string) cachePaths {
	base := cacheBase(name) + "-" + key[:16]
	return cachePaths{
		archive: filepath.Join(dir, base+"-oci.tar"),
		record:  filepath.Join(dir, base+".json"),
		log:     filepath.Join(dir, base+".debootstrap.log"),
	}
}

// cacheBase is the last path element of the image name without its tag.
func cacheBase(name string) string {
	repo := name[:strings.LastIndex(name, ":")]
	return path.Base(repo)
}

// Ensure returns the image archive for opts from the cache, building it first if it
// is not there, does not match its record, or opts.Force is set.
func Ensure(ctx context.Context, opts Options) (*Result, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.CacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the cache directory: %w", err)
	}
	// Absolute and without symlinks: leftover mounts are found by comparing paths
	// with /proc/self/mountinfo.
	dir, err := filepath.Abs(opts.CacheDir)
	if err == nil {
		dir, err = filepath.EvalSymlinks(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("resolving the cache directory: %w", err)
	}
	opts.CacheDir = dir
	// Two dev-ups at once must not both run debootstrap into the same cache.
	unlock, err := lockFile(filepath.Join(opts.CacheDir, "."+cacheBase(opts.Name)+".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	tool, err := opts.Bootstrapper.Version(ctx)
	if err != nil {
		return nil, err
	}
	inputs := opts.keyInputs(tool)
	key := CacheKey(inputs)
	paths := pathsFor(opts.CacheDir, opts.Name, key)
	if !opts.Force {
		if res, ok := readCache(paths, key); ok {
			return res, nil
		}
	}
	rec, err := build(ctx, &opts, paths, inputs, key)
	if err != nil {
		return nil, err
	}
	prune(opts.CacheDir, cacheBase(opts.Name), key[:16])
	return resultOf(rec, paths.archive, false), nil
}

func resultOf(rec *record, archive string, cached bool) *Result {
	return &Result{
		Name:      rec.Name,
		Digest:    rec.Digest,
		Path:      archive,
		Size:      rec.ArchiveSize,
		Key:       rec.Key,
		Cached:    cached,
		Packages:  rec.Packages,
		Bootstrap: time.Duration(rec.BootstrapSeconds * float64(time.Second)),
	}
}

// readCache returns the cached archive if its record is for key and the archive's
// bytes still are the ones recorded.
func readCache(paths cachePaths, key string) (*Result, bool) {
	b, err := os.ReadFile(paths.record)
	if err != nil {
		return nil, false
	}
	var rec record
	if json.Unmarshal(b, &rec) != nil || rec.Key != key {
		return nil, false
	}
	sum, size, err := fileSHA256(paths.archive)
	if err != nil || sum != rec.ArchiveSHA256 || size != rec.ArchiveSize {
		return nil, false
	}
	return resultOf(&rec, paths.archive, true), true
}

// build bootstraps, minimizes, checks and packs the image into paths.archive and
// writes its record.
func build(ctx context.Context, opts *Options, paths cachePaths, inputs []string, key string) (*record, error) {
	work, err := os.MkdirTemp(opts.CacheDir, ".build-*")
	if err != nil {
		return nil, fmt.Errorf("creating the build directory: %w", err)
	}
	defer func() {
		if err := removeTree(work); err != nil {
			opts.Log("warning: cleaning up: %v", err)
		}
	}()
	root := filepath.Join(work, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		return nil, err
	}

	took, err := bootstrap(ctx, opts, root, paths.log)
	if err != nil {
		return nil, err
	}
	if err := minimize(root); err != nil {
		return nil, err
	}
	if err := opts.Check(ctx, root); err != nil {
		return nil, fmt.Errorf("checking the image: %w", err)
	}
	pkgs, err := installedVersions(root, append([]string{"base-files"}, opts.Include...))
	if err != nil {
		return nil, err
	}
	if mounts, err := mountsUnder(root); err != nil || len(mounts) > 0 {
		return nil, fmt.Errorf("debootstrap left mounts in the tree (%v, %v); not packing them", mounts, err)
	}

	opts.Log("packing %s", root)
	rec, err := pack(opts, root, work, paths.archive, pkgs)
	if err != nil {
		return nil, err
	}
	rec.Key, rec.Inputs, rec.Packages = key, inputs, pkgs
	rec.BootstrapSeconds = took.Round(time.Millisecond).Seconds()
	rec.BuiltAt = time.Now().UTC().Format(time.RFC3339)
	if err := writeRecord(paths.record, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

func bootstrap(ctx context.Context, opts *Options, root, logPath string) (time.Duration, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return 0, fmt.Errorf("creating the debootstrap log: %w", err)
	}
	defer logFile.Close()
	opts.Log("debootstrap %s (log: %s)", strings.Join(Args(opts, root), " "), logPath)
	start := time.Now()
	if err := opts.Bootstrapper.Bootstrap(ctx, opts, root, logFile); err != nil {
		return 0, err
	}
	took := time.Since(start)
	opts.Log("debootstrap took %s", took.Round(time.Second))
	return took, nil
}

// pack writes the layer and the image layout for the tree at root, via temporary files
// in work, to archive (renamed into place when complete).
func pack(opts *Options, root, work, archive string, pkgs map[string]string) (*record, error) {
	lf, err := writeLayer(work, root, opts.ModTime)
	if err != nil {
		return nil, err
	}
	defer os.Remove(lf.path)
	if len(lf.stats.Skipped) > 0 {
		opts.Log("left out %d device nodes/sockets: %s", len(lf.stats.Skipped), strings.Join(lf.stats.Skipped, " "))
	}
	meta := testimage.Meta{
		Name:    opts.Name,
		Created: opts.ModTime,
		Config: testimage.ImageConfig{
			Env:        []string{"PATH=" + testimage.DefaultPath},
			Cmd:        []string{"/bin/bash"},
			WorkingDir: "/",
		},
		History: testimage.History{
			CreatedBy: "debootstrap " + strings.Join(Args(opts, "/"), " "),
			Comment:   "gondolin distroimage, minimized; " + packageList(pkgs),
		},
	}
	sum := newCounter()
	var lr *testimage.Layout
	err = atomicfile.Write(archive, 0o644, func(w io.Writer) (err error) {
		lr, err = testimage.WriteLayout(io.MultiWriter(w, sum), meta, lf.layout())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("writing the archive: %w", err)
	}
	return &record{
		Name:             opts.Name,
		Digest:           lr.Manifest.Digest,
		ArchiveSHA256:    strings.TrimPrefix(sum.digest(), "sha256:"),
		ArchiveSize:      sum.n,
		LayerSize:        lf.desc.Size,
		UncompressedSize: lf.size,
		Skipped:          lf.stats.Skipped,
	}, nil
}

// packageList formats versions as "base-files 12.4+deb12u11, curl 7.88.1-10+deb12u12".
func packageList(pkgs map[string]string) string {
	names := slices.Sorted(maps.Keys(pkgs))
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + " " + pkgs[n]
	}
	return strings.Join(parts, ", ")
}

func writeRecord(p string, rec *record) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(p, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing the cache record: %w", err)
	}
	return nil
}

// cacheFile matches the names pathsFor gives, with the key prefix as group 1.
var cacheFile = regexp.MustCompile(`^-([0-9a-f]{16})(-oci\.tar|\.json|\.debootstrap\.log)$`)

// prune removes the cache entries of other keys for the same image: each is tens of
// megabytes, and an old recipe's archive is never used again.
func prune(dir, base, keep string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), base)
		if m := cacheFile.FindStringSubmatch(rest); ok && m != nil && m[1] != keep {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

func fileSHA256(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	c := newCounter()
	if _, err := io.Copy(c, f); err != nil {
		return "", 0, err
	}
	return strings.TrimPrefix(c.digest(), "sha256:"), c.n, nil
}

// lockFile takes an exclusive flock on p and returns its release.
func lockFile(p string) (func(), error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the lock %s: %w", p, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}
