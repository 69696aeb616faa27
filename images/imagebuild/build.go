package imagebuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/earendil-works/gondolin-containerd/images/kernel"
	"github.com/earendil-works/gondolin-containerd/internal/atomicfile"
)

// FragmentName is how the config fragment is named in the manifest.
const FragmentName = "gondolin.config"

// Options configure Build.
type Options struct {
	Agent       string          // agent binary, becomes /init
	Out         string          // output directory (vmlinuz, initrd.img, manifest.json)
	Cache       string          // download and scratch directory
	Metapackage string          // default DefaultMetapackage
	Modules     []ModuleRequest // default DefaultModules
	Apt         Apt             // default ExecApt{}
	Extract     ExtractFunc     // default DpkgExtract
	Force       bool            // rebuild even if up to date
	// Kernel builds the minimal kernel; default MakeKernel{}.
	Kernel KernelBuilder
	// Fragment is the minimal kernel's config fragment; default
	// kernel.Fragment (images/kernel/gondolin.config).
	Fragment []byte
	// Patches are applied to the kernel source first; default
	// kernel.Patches() (images/kernel/patches).
	Patches []kernel.Patch
}

// Result describes what Build did.
type Result struct {
	UpToDate       bool // nothing was done
	Downloaded     bool // the kernel package was fetched (not in the cache)
	KernelCompiled bool // the minimal kernel was compiled (not in the cache)
	Manifest       *Manifest
	Plan           *ModulePlan
	DebPath        string
}

// Build resolves the stock kernel through apt, fetches and verifies it,
// builds (or takes from the cache) the minimal kernel, and writes the files
// named in doc.go into opts.Out, unless the manifest there already describes
// the same inputs and the outputs match it.
func Build(ctx context.Context, opts Options) (*Result, error) {
	if opts.Agent == "" || opts.Out == "" || opts.Cache == "" {
		return nil, errors.New("agent, out and cache are required")
	}
	if opts.Metapackage == "" {
		opts.Metapackage = DefaultMetapackage
	}
	if opts.Modules == nil {
		opts.Modules = DefaultModules
	}
	if opts.Apt == nil {
		opts.Apt = ExecApt{}
	}
	if opts.Extract == nil {
		opts.Extract = DpkgExtract
	}
	if opts.Kernel == nil {
		opts.Kernel = MakeKernel{}
	}
	if opts.Fragment == nil {
		opts.Fragment = kernel.Fragment
	}
	if opts.Patches == nil {
		opts.Patches = kernel.Patches()
	}
	recipe := Recipe{Fragment: opts.Fragment, Patches: opts.Patches}
	agent, err := ReadAgent(opts.Agent)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Cache, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockDir(opts.Cache)
	if err != nil {
		return nil, err
	}
	defer unlock()

	rk, err := ResolveMetapackage(ctx, opts.Apt, opts.Metapackage)
	if err != nil {
		return nil, err
	}
	src, err := opts.Kernel.Source(ctx)
	if err != nil {
		return nil, err
	}
	agentArt := NewArtifact(filepath.Base(opts.Agent), RoleAgent, "", agent)
	requested := RequestKeys(opts.Modules)
	key := src.CacheKey(recipe)

	if !opts.Force {
		if m, ok := UpToDate(opts.Out, rk, agentArt.SHA256, requested, key); ok {
			return &Result{UpToDate: true, Manifest: m}, nil
		}
	}

	if err := rk.Lookup(ctx, opts.Apt); err != nil {
		return nil, err
	}
	res := &Result{}
	debPath, downloaded, err := fetchDeb(ctx, opts.Apt, opts.Cache, rk.Package)
	if err != nil {
		return nil, err
	}
	res.DebPath, res.Downloaded = debPath, downloaded

	extractDir, err := os.MkdirTemp(opts.Cache, "extract-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(extractDir)
	if err := opts.Extract(ctx, debPath, extractDir); err != nil {
		return nil, err
	}
	kp, err := FindKernel(extractDir)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", rk.Package.Package, rk.Package.Version, err)
	}
	vmlinuz, err := os.ReadFile(kp.Vmlinuz)
	if err != nil {
		return nil, err
	}
	cfgData, err := os.ReadFile(kp.Config)
	if err != nil {
		return nil, err
	}
	cfg, err := ParseKernelConfig(cfgData)
	if err != nil {
		return nil, err
	}
	tree, err := OpenModuleTree(kp.ModulesRoot)
	if err != nil {
		return nil, err
	}
	plan, err := PlanModules(cfg, opts.Modules, tree.Has, tree.Deps)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", kp.Release, err)
	}
	res.Plan = plan
	initrd, mods, order, err := BuildInitrd(agent, kp.Release, plan.Order, tree)
	if err != nil {
		return nil, err
	}

	debData, err := fileDigest(debPath)
	if err != nil {
		return nil, err
	}

	bk, compiled, err := MinimalKernel(ctx, opts.Kernel, src, recipe, opts.Cache)
	if err != nil {
		return nil, fmt.Errorf("minimal kernel: %w", err)
	}
	res.KernelCompiled = compiled
	minInitrd, _, _, err := BuildInitrd(agent, bk.Release, nil, nil)
	if err != nil {
		return nil, err
	}
	srcData, err := fileDigest(src.Tarball)
	if err != nil {
		return nil, err
	}

	m := &Manifest{
		Schema: ManifestSchema,
		Minimal: MinimalInfo{
			KernelRelease: bk.Release, SourcePackage: src.Package, SourceVersion: src.Version,
			Compiler: src.Compiler, FragmentSHA256: SHA256Hex(opts.Fragment), CacheKey: key,
			BuildTimestamp: KernelBuildTimestamp, BuildUser: KernelBuildUser, BuildHost: KernelBuildHost,
		},
		KernelRelease:      kp.Release,
		Metapackage:        rk.Metapackage,
		MetapackageVersion: rk.MetapackageVersion,
		Inputs: []Artifact{
			{Name: rk.Package.Package, Role: RoleKernelPackage, Version: rk.Package.Version, SHA256: debData.sha, Size: debData.size},
			{Name: filepath.Base(src.Tarball), Role: RoleKernelSource, Version: src.Version, SHA256: srcData.sha, Size: srcData.size},
			NewArtifact(FragmentName, RoleKernelConfig, "", opts.Fragment),
			agentArt,
		},
		Outputs: []Artifact{
			NewArtifact(KernelFile, RoleKernel, bk.Release, bk.Vmlinux),
			NewArtifact(InitrdFile, RoleInitrd, "", minInitrd),
			NewArtifact(KernelConfigFile, RoleKernelConfig, bk.Release, bk.Config),
			NewArtifact(KernelStockFile, RoleKernelStock, kp.Release, vmlinuz),
			NewArtifact(InitrdStockFile, RoleInitrdStock, "", initrd),
		},
		Modules:   mods,
		LoadOrder: order,
		Requested: requested,
	}
	for _, p := range opts.Patches {
		m.Inputs = append(m.Inputs, NewArtifact(p.Name, RoleKernelPatch, "", p.Data))
	}
	for _, r := range plan.BuiltIn {
		m.BuiltIn = append(m.BuiltIn, r.Name)
	}
	manifest, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, err
	}
	// The manifest goes last: it is what UpToDate trusts.
	for _, f := range []struct {
		name string
		data []byte
	}{
		{KernelFile, bk.Vmlinux}, {InitrdFile, minInitrd}, {KernelConfigFile, bk.Config},
		{KernelStockFile, vmlinuz}, {InitrdStockFile, initrd}, {ManifestFile, manifest},
	} {
		if err := atomicfile.WriteFile(filepath.Join(opts.Out, f.name), f.data, 0o644); err != nil {
			return nil, err
		}
	}
	pruneDebs(opts.Cache, filepath.Base(debPath))
	m.Normalize()
	res.Manifest = m
	return res, nil
}

// ExtractFunc unpacks a .deb's files into dir.
type ExtractFunc func(ctx context.Context, deb, dir string) error

// DpkgExtract runs `dpkg-deb -x deb dir`.
func DpkgExtract(ctx context.Context, deb, dir string) error {
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %v: %s", deb, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ReadAgent reads the agent binary and checks it can run as /init: a static
// x86-64 ELF executable (a dynamic one would find no loader in the initramfs).
func ReadAgent(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("agent %s is not an ELF binary: %w", path, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		return nil, fmt.Errorf("agent %s is %v %v, want an x86-64 binary", path, f.Class, f.Machine)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return nil, fmt.Errorf("agent %s is not an executable (%v)", path, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("agent %s is dynamically linked; build it static (CGO_ENABLED=0)", path)
		}
	}
	return data, nil
}

// UpToDate reports whether outDir holds a manifest for exactly these inputs
// and outputs that still match it (size and sha256). The kernel package is
// identified by name and version (what ResolveMetapackage gives, saving an
// apt-cache call): the Debian archive never reuses a version number for
// different contents, and the .deb's sha256 was checked when it was built.
func UpToDate(outDir string, rk *ResolvedKernel, agentSHA string, requested []string, minimalKey string) (*Manifest, bool) {
	data, err := os.ReadFile(filepath.Join(outDir, ManifestFile))
	if err != nil {
		return nil, false
	}
	m, err := ParseManifest(data)
	if err != nil || m.Schema != ManifestSchema {
		return nil, false
	}
	kin, ok1 := m.Input(RoleKernelPackage)
	ain, ok2 := m.Input(RoleAgent)
	if !ok1 || !ok2 || kin.Name != rk.Package.Package || kin.Version != rk.Package.Version ||
		ain.SHA256 != agentSHA ||
		m.Metapackage != rk.Metapackage || strings.Join(m.Requested, " ") != strings.Join(requested, " ") ||
		m.Minimal.CacheKey != minimalKey {
		return nil, false
	}
	for _, role := range []string{RoleKernel, RoleInitrd, RoleKernelConfig, RoleKernelStock, RoleInitrdStock} {
		o, ok := m.Output(role)
		if !ok {
			return nil, false
		}
		d, err := fileDigest(filepath.Join(outDir, o.Name))
		if err != nil || d.size != o.Size || d.sha != o.SHA256 {
			return nil, false
		}
	}
	return m, true
}

// KernelPaths are the files of an extracted kernel package.
type KernelPaths struct {
	Release     string // e.g. 6.1.0-56-cloud-amd64
	Vmlinuz     string // boot/vmlinuz-<release>
	Config      string // boot/config-<release>
	ModulesRoot string // lib/modules/<release> (or usr/lib/modules/<release>)
}

// FindKernel locates the kernel, its config and its module tree in an
// extracted linux-image package.
func FindKernel(root string) (*KernelPaths, error) {
	var modDirs []string
	for _, base := range []string{"lib/modules", "usr/lib/modules"} {
		ents, err := os.ReadDir(filepath.Join(root, base))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() {
				modDirs = append(modDirs, filepath.Join(root, base, e.Name()))
			}
		}
	}
	if len(modDirs) != 1 {
		return nil, fmt.Errorf("want exactly one /lib/modules/<release> directory in the package, found %d", len(modDirs))
	}
	rel := filepath.Base(modDirs[0])
	kp := &KernelPaths{Release: rel, ModulesRoot: modDirs[0]}
	for _, f := range []struct {
		dst  *string
		name string
	}{{&kp.Vmlinuz, "vmlinuz-" + rel}, {&kp.Config, "config-" + rel}} {
		p := filepath.Join(root, "boot", f.name)
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			return nil, fmt.Errorf("package has no /boot/%s", f.name)
		}
		*f.dst = p
	}
	return kp, nil
}

// ModuleSource is where BuildInitrd gets modules from; *ModuleTree is one.
type ModuleSource interface {
	Load(name string) ([]byte, error)
	Modinfo(name string) (map[string][]string, error)
	File(name string) string
}

// BuildInitrd assembles the initramfs: the agent as /init, the base
// directories, /dev/console, and the modules in order with load.order. Each
// module's vermagic must name the kernel release.
func BuildInitrd(agent []byte, release string, order []string, src ModuleSource) ([]byte, []ModuleArtifact, []string, error) {
	a := NewArchive()
	add := func(err error) {
		if err != nil {
			panic(err) // only programming errors: fixed, valid paths
		}
	}
	add(a.AddFile(InitPath, 0o755, agent))
	for _, d := range []string{"/dev", "/proc", "/sys", "/run", "/mnt", ModulesDir} {
		add(a.AddDir(d, 0o755))
	}
	add(a.AddDir("/tmp", 0o1777))
	add(a.AddDir("/root", 0o700))
	// The kernel opens /dev/console for PID 1's stdin/stdout/stderr before the
	// agent can mount devtmpfs; without this node init has no stdio.
	add(a.AddCharDev("/dev/console", 0o600, 5, 1))

	var mods []ModuleArtifact
	var loadOrder bytes.Buffer
	var paths []string
	for _, name := range order {
		ko, err := src.Load(name)
		if err != nil {
			return nil, nil, nil, err
		}
		info, err := src.Modinfo(name)
		if err != nil {
			return nil, nil, nil, err
		}
		vm := ""
		if v := info["vermagic"]; len(v) > 0 {
			vm = v[0]
		}
		if !strings.HasPrefix(vm, release+" ") {
			return nil, nil, nil, fmt.Errorf("module %s: vermagic %q is not for kernel %s", name, vm, release)
		}
		version := ""
		if v := info["version"]; len(v) > 0 {
			version = v[0]
		}
		p := ModulesDir + "/" + name + ".ko"
		if err := a.AddFile(p, 0o644, ko); err != nil {
			return nil, nil, nil, err
		}
		mods = append(mods, ModuleArtifact{
			Name: name, Version: version, Path: p, Source: src.File(name),
			SHA256: SHA256Hex(ko), Size: int64(len(ko)),
		})
		loadOrder.WriteString(p + "\n")
		paths = append(paths, p)
	}
	add(a.AddFile(LoadOrderPath, 0o644, loadOrder.Bytes()))
	return a.Bytes(), mods, paths, nil
}

type digest struct {
	sha  string
	size int64
}

func fileDigest(path string) (digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return digest{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return digest{}, err
	}
	return digest{sha: hex.EncodeToString(h.Sum(nil)), size: n}, nil
}

// fetchDeb returns the cached .deb for pkg, downloading it with apt-get if it
// is missing or does not match apt's SHA256 (which apt checked against the
// signed Release file when it fetched the package lists).
func fetchDeb(ctx context.Context, apt Apt, cache string, pkg PackageInfo) (string, bool, error) {
	dst := filepath.Join(cache, DebFileName(pkg))
	if d, err := fileDigest(dst); err == nil && d.sha == pkg.SHA256 {
		return dst, false, nil
	}
	dl, err := os.MkdirTemp(cache, "download-")
	if err != nil {
		return "", false, err
	}
	defer os.RemoveAll(dl)
	spec := pkg.Package + "=" + pkg.Version
	if err := apt.Download(ctx, spec, dl); err != nil {
		return "", false, err
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	if len(debs) != 1 {
		return "", false, fmt.Errorf("apt-get download %s produced %d .deb files, want 1", spec, len(debs))
	}
	d, err := fileDigest(debs[0])
	if err != nil {
		return "", false, err
	}
	if d.sha != pkg.SHA256 {
		return "", false, fmt.Errorf("%s: sha256 %s does not match apt's %s", filepath.Base(debs[0]), d.sha, pkg.SHA256)
	}
	if pkg.Size != 0 && d.size != pkg.Size {
		return "", false, fmt.Errorf("%s: size %d does not match apt's %d", filepath.Base(debs[0]), d.size, pkg.Size)
	}
	if err := os.Rename(debs[0], dst); err != nil {
		return "", false, err
	}
	return dst, true, nil
}

// pruneDebs removes older kernel packages from the cache.
func pruneDebs(cache, keep string) {
	old, _ := filepath.Glob(filepath.Join(cache, "linux-image-*.deb"))
	for _, p := range old {
		if filepath.Base(p) != keep {
			_ = os.Remove(p)
		}
	}
}

// lockDir takes an exclusive lock on dir/.lock so concurrent builds sharing a
// cache serialize.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}
