package imagebuild

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/earendil-works/gondolin-containerd/images/kernel"
	"github.com/earendil-works/gondolin-containerd/internal/atomicfile"
)

// DefaultSourcePackage is the Debian package whose tarball
// (/usr/src/<package>.tar.xz) the minimal kernel is built from.
const DefaultSourcePackage = "linux-source-6.1"

// Reproducible-build settings of the minimal kernel: the kernel embeds the
// build time, user, host and build number in its version string.
const (
	KernelBuildTimestamp = "Mon Jan  1 00:00:00 UTC 2024"
	KernelBuildUser      = "gondolin"
	KernelBuildHost      = "gondolin"
	KernelBuildVersion   = "1"
)

// minimalBuilderVersion changes whenever the build recipe changes (make
// targets, post-processing), so cached kernels from an older recipe are not
// reused.
const minimalBuilderVersion = "gondolin-minimal-kernel/2"

// BuildDepsHint says what to install when the kernel source or the tools to
// build it are missing.
const BuildDepsHint = "apt-get install linux-source-6.1 build-essential patch flex bison bc libelf-dev"

// KernelSource identifies what the minimal kernel is built from and with.
type KernelSource struct {
	Package  string // Debian source package, e.g. linux-source-6.1
	Version  string // its installed version, e.g. 6.1.192-2
	Tarball  string // /usr/src/linux-source-6.1.tar.xz
	Compiler string // first line of `gcc --version`
}

// Recipe is what the minimal kernel is built from besides the source: the
// config fragment and the patches applied first.
type Recipe struct {
	Fragment []byte
	Patches  []kernel.Patch
}

// CacheKey identifies a build of recipe from src: the same key gives the
// same kernel bytes.
func (src *KernelSource) CacheKey(recipe Recipe) string {
	parts := []string{minimalBuilderVersion, src.Package, src.Version, src.Compiler, SHA256Hex(recipe.Fragment)}
	for _, p := range recipe.Patches {
		parts = append(parts, p.Name, SHA256Hex(p.Data))
	}
	return SHA256Hex([]byte(strings.Join(parts, "\n")))
}

// BuiltKernel is the result of a minimal kernel build.
type BuiltKernel struct {
	Release string // `uname -r` of the kernel, e.g. 6.1.192-gondolin
	Vmlinux []byte // ELF image with a PVH entry point (QEMU boots it directly)
	Config  []byte // the complete .config it was built with
}

// KernelBuilder builds the minimal kernel; MakeKernel is the real one.
type KernelBuilder interface {
	// Source resolves the installed kernel source and compiler.
	Source(ctx context.Context) (*KernelSource, error)
	// Build applies recipe's patches to the source and compiles its
	// fragment over tinyconfig, in a scratch directory below dir, which it
	// removes afterwards.
	Build(ctx context.Context, src *KernelSource, recipe Recipe, dir string) (*BuiltKernel, error)
}

// MakeKernel builds with the kernel's own make from Debian's linux-source
// tarball.
type MakeKernel struct {
	Package string // default DefaultSourcePackage
	Jobs    int    // parallel make jobs; default the number of CPUs
	// Log receives make's output; nil discards it (it is kept for errors).
	Log func(line string)
}

func (mk MakeKernel) pkg() string {
	if mk.Package == "" {
		return DefaultSourcePackage
	}
	return mk.Package
}

// Source finds the installed source package and the compiler.
func (mk MakeKernel) Source(ctx context.Context) (*KernelSource, error) {
	pkg := mk.pkg()
	out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Status}\t${Version}", pkg).Output()
	status, version, _ := strings.Cut(string(out), "\t")
	if err != nil || status != "install ok installed" || version == "" {
		return nil, fmt.Errorf("the minimal guest kernel is built from Debian's %s, which is not installed: %s", pkg, BuildDepsHint)
	}
	src := &KernelSource{Package: pkg, Version: version, Tarball: filepath.Join("/usr/src", pkg+".tar.xz")}
	if _, err := os.Stat(src.Tarball); err != nil {
		return nil, fmt.Errorf("%s %s is installed but %s is missing: reinstall it (%s)", pkg, version, src.Tarball, BuildDepsHint)
	}
	for _, tool := range []string{"make", "gcc", "ld", "flex", "bison", "bc", "tar", "xz", "patch"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("building the minimal guest kernel needs %s: %s", tool, BuildDepsHint)
		}
	}
	cc, err := exec.CommandContext(ctx, "gcc", "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("gcc --version: %w", err)
	}
	src.Compiler, _, _ = strings.Cut(string(cc), "\n")
	return src, nil
}

// Build extracts the tarball, applies the patches, configures tinyconfig +
// fragment, checks that every symbol of the fragment took, and builds
// vmlinux.
func (mk MakeKernel) Build(ctx context.Context, src *KernelSource, recipe Recipe, dir string) (*BuiltKernel, error) {
	scratch, err := os.MkdirTemp(dir, "kbuild-")
	if err != nil {
		return nil, err
	}
	// Commands run in the tree: every path handed to them must be absolute.
	if scratch, err = filepath.Abs(scratch); err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	if err := mk.run(ctx, scratch, "tar", "-xf", src.Tarball, "-C", scratch); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(scratch)
	if err != nil {
		return nil, err
	}
	if len(ents) != 1 || !ents[0].IsDir() {
		return nil, fmt.Errorf("%s: want one top directory, found %d entries", src.Tarball, len(ents))
	}
	tree := filepath.Join(scratch, ents[0].Name())
	for _, p := range recipe.Patches {
		path := filepath.Join(scratch, p.Name)
		if err := os.WriteFile(path, p.Data, 0o644); err != nil {
			return nil, err
		}
		// --forward: a patch the source already carries is an error,
		// not a reversal.
		if err := mk.run(ctx, tree, "patch", "-p1", "--forward", "--batch", "-i", path); err != nil {
			return nil, fmt.Errorf("kernel patch %s does not apply to %s %s: %w", p.Name, src.Package, src.Version, err)
		}
	}
	fragment := recipe.Fragment
	fragPath := filepath.Join(scratch, "gondolin.config")
	if err := os.WriteFile(fragPath, fragment, 0o644); err != nil {
		return nil, err
	}
	jobs := mk.Jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	steps := [][]string{
		{"make", "tinyconfig"},
		{"scripts/kconfig/merge_config.sh", "-m", ".config", fragPath},
		{"make", "olddefconfig"},
	}
	for _, s := range steps {
		if err := mk.run(ctx, tree, s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	config, err := os.ReadFile(filepath.Join(tree, ".config"))
	if err != nil {
		return nil, err
	}
	if err := CheckFragment(fragment, config); err != nil {
		return nil, err
	}
	if err := mk.run(ctx, tree, "make", fmt.Sprintf("-j%d", jobs), "vmlinux"); err != nil {
		return nil, err
	}
	release, err := os.ReadFile(filepath.Join(tree, "include/config/kernel.release"))
	if err != nil {
		return nil, err
	}
	vmlinux, err := os.ReadFile(filepath.Join(tree, "vmlinux"))
	if err != nil {
		return nil, err
	}
	vmlinux, err = StripELF(vmlinux)
	if err != nil {
		return nil, err
	}
	if err := CheckPVH(vmlinux); err != nil {
		return nil, err
	}
	return &BuiltKernel{Release: strings.TrimSpace(string(release)), Vmlinux: vmlinux, Config: config}, nil
}

func (mk MakeKernel) run(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"LC_ALL=C", "ARCH=x86_64",
		"KBUILD_BUILD_TIMESTAMP="+KernelBuildTimestamp,
		"KBUILD_BUILD_USER="+KernelBuildUser,
		"KBUILD_BUILD_HOST="+KernelBuildHost,
		"KBUILD_BUILD_VERSION="+KernelBuildVersion,
	)
	var tail bytes.Buffer
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return fmt.Errorf("%s: %w", name, err)
	}
	pw.Close()
	var lines []string
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		if mk.Log != nil {
			mk.Log(sc.Text())
		}
		lines = append(lines, sc.Text())
		if len(lines) > 40 {
			lines = lines[1:]
		}
	}
	pr.Close()
	if err := cmd.Wait(); err != nil {
		for _, l := range lines {
			tail.WriteString(l + "\n")
		}
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail.String())
	}
	return nil
}

// CheckFragment reports every symbol of fragment whose value in config
// differs from the one written there (a dependency kconfig could not meet
// silently drops it).
func CheckFragment(fragment, config []byte) error {
	want, err := ParseKernelConfig(fragment)
	if err != nil {
		return fmt.Errorf("config fragment: %w", err)
	}
	got, err := ParseKernelConfig(config)
	if err != nil {
		return err
	}
	var bad []string
	for sym, v := range want {
		g, ok := got[sym]
		if !ok {
			g = "n"
		}
		if g != v {
			bad = append(bad, fmt.Sprintf("%s=%s (want %s)", sym, g, v))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("kernel config: %d symbols of the fragment did not take (missing dependency?): %s", len(bad), strings.Join(bad, ", "))
	}
	return nil
}

// StripELF drops the symbol and string tables of an ELF image (sections
// no loader reads), keeping every loaded byte: what `strip` would do for a
// kernel, without needing binutils to agree on the output.
func StripELF(data []byte) ([]byte, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("vmlinux is not an ELF file: %w", err)
	}
	defer f.Close()
	// The loader (QEMU's PVH boot) reads program headers and segments only;
	// find the end of the last byte any of them, or the notes, covers.
	var end uint64
	for _, p := range f.Progs {
		if e := p.Off + p.Filesz; e > end {
			end = e
		}
	}
	if f.Class != elf.ELFCLASS64 || end == 0 || end > uint64(len(data)) {
		return data, nil
	}
	out := append([]byte(nil), data[:end]...)
	// No section headers: e_shoff, e_shnum, e_shstrndx = 0.
	binary.LittleEndian.PutUint64(out[0x28:], 0)
	binary.LittleEndian.PutUint16(out[0x3c:], 0)
	binary.LittleEndian.PutUint16(out[0x3e:], 0)
	return out, nil
}

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit entry point
// that QEMU's PVH boot jumps to.
const xenElfnotePhys32Entry = 18

// CheckPVH reports an error unless data is an x86-64 ELF kernel with a PVH
// entry note (CONFIG_PVH), which QEMU needs to boot an uncompressed kernel.
func CheckPVH(data []byte) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("kernel is not an ELF image: %w", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("kernel is %v, want x86-64", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return err
		}
		for len(b) >= 12 {
			nsz, dsz, typ := binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint32(b[8:])
			name := b[12:min(len(b), 12+int(nsz))]
			if string(bytes.TrimRight(name, "\x00")) == "Xen" && typ == xenElfnotePhys32Entry {
				return nil
			}
			n := 12 + align4(int(nsz)) + align4(int(dsz))
			if n > len(b) {
				break
			}
			b = b[n:]
		}
	}
	return errors.New("kernel has no PVH entry note (CONFIG_PVH): QEMU cannot boot it as an ELF image")
}

func align4(n int) int { return (n + 3) &^ 3 }

// minimalCache is the on-disk record of a built kernel in the cache.
type minimalCache struct {
	Key     string `json:"key"`
	Release string `json:"release"`
	Vmlinux string `json:"vmlinuxSHA256"`
	Config  string `json:"configSHA256"`
}

// MinimalKernel returns the kernel for src and recipe from the cache
// (cache/minimal-<key>), building it first if it is not there or damaged.
func MinimalKernel(ctx context.Context, kb KernelBuilder, src *KernelSource, recipe Recipe, cache string) (*BuiltKernel, bool, error) {
	key := src.CacheKey(recipe)
	dir := filepath.Join(cache, "minimal-"+key[:16])
	if bk, ok := readMinimalCache(dir, key); ok {
		return bk, false, nil
	}
	bk, err := kb.Build(ctx, src, recipe, cache)
	if err != nil {
		return nil, false, err
	}
	rec, _ := json.MarshalIndent(minimalCache{Key: key, Release: bk.Release, Vmlinux: SHA256Hex(bk.Vmlinux), Config: SHA256Hex(bk.Config)}, "", "  ")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, false, err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"vmlinux", bk.Vmlinux}, {"config", bk.Config}, {"build.json", rec}} {
		if err := atomicfile.WriteFile(filepath.Join(dir, f.name), f.data, 0o644); err != nil {
			return nil, false, err
		}
	}
	pruneMinimal(cache, filepath.Base(dir))
	return bk, true, nil
}

func readMinimalCache(dir, key string) (*BuiltKernel, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "build.json"))
	if err != nil {
		return nil, false
	}
	var rec minimalCache
	if json.Unmarshal(b, &rec) != nil || rec.Key != key {
		return nil, false
	}
	vmlinux, err1 := os.ReadFile(filepath.Join(dir, "vmlinux"))
	config, err2 := os.ReadFile(filepath.Join(dir, "config"))
	if err1 != nil || err2 != nil || SHA256Hex(vmlinux) != rec.Vmlinux || SHA256Hex(config) != rec.Config {
		return nil, false
	}
	return &BuiltKernel{Release: rec.Release, Vmlinux: vmlinux, Config: config}, true
}

// pruneMinimal removes cached kernels other than keep.
func pruneMinimal(cache, keep string) {
	old, _ := filepath.Glob(filepath.Join(cache, "minimal-*"))
	for _, p := range old {
		if filepath.Base(p) != keep {
			_ = os.RemoveAll(p)
		}
	}
}
