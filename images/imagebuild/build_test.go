package imagebuild

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/earendil-works/gondolin-containerd/images/kernel"
)

func TestReadAgent(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	static := fakeELF(elf.ET_EXEC, "", nil)
	if got, err := ReadAgent(write("static", static)); err != nil || !bytes.Equal(got, static) {
		t.Errorf("static agent rejected: %v", err)
	}
	if _, err := ReadAgent(write("pie", fakeELF(elf.ET_DYN, "", nil))); err != nil {
		t.Errorf("static-pie agent rejected: %v", err)
	}
	if _, err := ReadAgent(write("dynamic", fakeELF(elf.ET_EXEC, "/lib64/ld-linux-x86-64.so.2", nil))); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("dynamic agent: %v", err)
	}
	if _, err := ReadAgent(write("script", []byte("#!/bin/sh\n"))); err == nil {
		t.Error("script accepted")
	}
	if _, err := ReadAgent(write("obj", fakeELF(elf.ET_REL, "", nil))); err == nil {
		t.Error("object file accepted")
	}
	if _, err := ReadAgent(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing agent accepted")
	}
}

// fakePackage writes what dpkg-deb -x gives for a kernel package.
func fakePackage(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	all := map[string][]byte{
		"boot/vmlinuz-" + testRelease: []byte("fake bzImage"),
		"boot/config-" + testRelease: []byte("CONFIG_VIRTIO=m\nCONFIG_HW_RANDOM_VIRTIO=m\nCONFIG_OVERLAY_FS=m\n" +
			"CONFIG_VIRTIO_PCI=y\n# CONFIG_VIRTIO_FS is not set\n"),
		"boot/System.map-" + testRelease: []byte("map"),
	}
	for rel, data := range files {
		all[filepath.Join("lib/modules", testRelease, rel)] = data
	}
	for rel, data := range all {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFindKernel(t *testing.T) {
	dir := t.TempDir()
	fakePackage(t, dir, fakeTreeFiles(t))
	kp, err := FindKernel(dir)
	if err != nil {
		t.Fatal(err)
	}
	if kp.Release != testRelease || filepath.Base(kp.Vmlinuz) != "vmlinuz-"+testRelease ||
		filepath.Base(kp.Config) != "config-"+testRelease || filepath.Base(kp.ModulesRoot) != testRelease {
		t.Errorf("%+v", kp)
	}
	os.Remove(kp.Vmlinuz)
	if _, err := FindKernel(dir); err == nil || !strings.Contains(err.Error(), "vmlinuz-"+testRelease) {
		t.Errorf("missing vmlinuz: %v", err)
	}
	if _, err := FindKernel(t.TempDir()); err == nil {
		t.Error("empty package accepted")
	}
}

func TestBuildInitrd(t *testing.T) {
	tree, err := OpenModuleTree(writeTree(t, fakeTreeFiles(t)))
	if err != nil {
		t.Fatal(err)
	}
	agent := fakeELF(elf.ET_EXEC, "", nil)
	order := []string{"virtio_ring", "virtio", "virtio_rng"}
	img, mods, paths, err := BuildInitrd(agent, testRelease, order, tree)
	if err != nil {
		t.Fatal(err)
	}
	img2, _, _, _ := BuildInitrd(agent, testRelease, order, tree)
	if !bytes.Equal(img, img2) {
		t.Error("initrd not deterministic")
	}
	files := map[string]rawHeader{}
	for _, r := range parseNewc(t, img) {
		files["/"+r.name] = r
	}
	for _, d := range []string{"/dev", "/proc", "/sys", "/run", "/tmp", "/root", "/mnt", "/lib", "/lib/modules"} {
		if files[d].mode&0o170000 != 0o040000 {
			t.Errorf("%s missing or not a directory", d)
		}
	}
	if r := files[InitPath]; r.mode != 0o100755 || !bytes.Equal(r.data, agent) {
		t.Errorf("/init mode %o", r.mode)
	}
	if r := files["/dev/console"]; r.mode != 0o020600 || r.rdevmaj != 5 || r.rdevmin != 1 {
		t.Errorf("/dev/console %+v", r)
	}
	wantOrder := "/lib/modules/virtio_ring.ko\n/lib/modules/virtio.ko\n/lib/modules/virtio_rng.ko\n"
	if got := string(files[LoadOrderPath].data); got != wantOrder {
		t.Errorf("load.order %q, want %q", got, wantOrder)
	}
	if strings.Join(paths, "\n")+"\n" != wantOrder {
		t.Errorf("paths %v", paths)
	}
	// Modules are stored decompressed (virtio was .ko.xz, virtio_rng .ko.zst).
	for _, m := range mods {
		r := files[m.Path]
		if !bytes.HasPrefix(r.data, []byte(elf.ELFMAG)) || SHA256Hex(r.data) != m.SHA256 || int64(len(r.data)) != m.Size {
			t.Errorf("%s: not a plain ELF matching the manifest", m.Path)
		}
	}
	if mods[2].Source != "kernel/drivers/char/hw_random/virtio-rng.ko.zst" {
		t.Errorf("source %q", mods[2].Source)
	}
	if _, _, _, err := BuildInitrd(agent, "6.1.0-1-other", order, tree); err == nil || !strings.Contains(err.Error(), "vermagic") {
		t.Errorf("vermagic mismatch: %v", err)
	}
	// No modules: load.order still exists, empty.
	img, _, _, err = BuildInitrd(agent, testRelease, nil, tree)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range parseNewc(t, img) {
		if r.name == strings.TrimPrefix(LoadOrderPath, "/") && r.size != 0 {
			t.Error("load.order not empty")
		}
	}
}

// TestBuild runs Build with a fake apt and extractor: outputs, manifest,
// incrementality and byte-identical rebuilds.
func TestBuild(t *testing.T) {
	dir := t.TempDir()
	deb := []byte("fake kernel deb")
	kshow := strings.Replace(strings.Replace(kernelShow, "26713492", "15", 1),
		"e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee", SHA256Hex(deb), 1)
	apt := &fakeApt{
		show: map[string]string{
			"linux-image-cloud-amd64":                    metaShow,
			"linux-image-6.1.0-56-cloud-amd64=6.1.192-2": kshow,
		},
		download: func(spec, d string) error { return os.WriteFile(filepath.Join(d, "k.deb"), deb, 0o644) },
	}
	extracts := 0
	extract := func(_ context.Context, debPath, d string) error {
		extracts++
		if b, _ := os.ReadFile(debPath); !bytes.Equal(b, deb) {
			t.Errorf("extracting %s: wrong content", debPath)
		}
		fakePackage(t, d, fakeTreeFiles(t))
		return nil
	}
	agentPath := filepath.Join(dir, "gondolin-agent")
	os.WriteFile(agentPath, fakeELF(elf.ET_EXEC, "", nil), 0o755)
	reqs := []ModuleRequest{
		{"virtio_pci", "CONFIG_VIRTIO_PCI", ""},
		{"virtio_rng", "CONFIG_HW_RANDOM_VIRTIO", ""},
		{"overlay", "CONFIG_OVERLAY_FS", ""},
	}
	tarball := filepath.Join(dir, "linux-source-6.1.tar.xz")
	os.WriteFile(tarball, []byte("fake source"), 0o644)
	kb := &fakeKernel{src: KernelSource{Package: "linux-source-6.1", Version: "6.1.192-2", Tarball: tarball, Compiler: "gcc 12"}}
	opts := Options{Agent: agentPath, Out: filepath.Join(dir, "out"), Cache: filepath.Join(dir, "cache"),
		Apt: apt, Extract: extract, Modules: reqs, Kernel: kb, Fragment: []byte("CONFIG_64BIT=y\n")}
	res, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.UpToDate || !res.Downloaded || !res.KernelCompiled || kb.builds != 1 {
		t.Errorf("first build: %+v", res)
	}
	m := res.Manifest
	if m.KernelRelease != testRelease || !reflect.DeepEqual(m.BuiltIn, []string{"virtio_pci"}) ||
		!reflect.DeepEqual(m.LoadOrder, []string{"/lib/modules/virtio_ring.ko", "/lib/modules/virtio.ko", "/lib/modules/virtio_rng.ko", "/lib/modules/overlay.ko"}) {
		t.Errorf("manifest %+v", m)
	}
	if in, _ := m.Input(RoleKernelPackage); in.Name != "linux-image-6.1.0-56-cloud-amd64" || in.Version != "6.1.192-2" || in.SHA256 != SHA256Hex(deb) {
		t.Errorf("kernel input %+v", in)
	}
	read := func() map[string][]byte {
		out := map[string][]byte{}
		for _, f := range []string{KernelFile, InitrdFile, KernelConfigFile, KernelStockFile, InitrdStockFile, ManifestFile} {
			b, err := os.ReadFile(filepath.Join(opts.Out, f))
			if err != nil {
				t.Fatal(err)
			}
			out[f] = b
		}
		return out
	}
	first := read()
	if string(first[KernelStockFile]) != "fake bzImage" {
		t.Error("stock vmlinuz not copied")
	}
	if string(first[KernelFile]) != "fake vmlinux" || string(first[KernelConfigFile]) != "CONFIG_64BIT=y\n" {
		t.Error("minimal kernel not written")
	}
	// The minimal kernel's initramfs has the agent and an empty load order.
	for _, r := range parseNewc(t, first[InitrdFile]) {
		if strings.HasSuffix(r.name, ".ko") || (r.name == strings.TrimPrefix(LoadOrderPath, "/") && r.size != 0) {
			t.Errorf("minimal initrd carries modules: %s", r.name)
		}
	}
	if m.Minimal.KernelRelease != "6.1.192-gondolin" || m.Minimal.SourceVersion != "6.1.192-2" || m.Minimal.CacheKey == "" {
		t.Errorf("minimal info %+v", m.Minimal)
	}
	if in, ok := m.Input(RoleKernelSource); !ok || in.SHA256 != SHA256Hex([]byte("fake source")) {
		t.Errorf("kernel source input %+v", in)
	}
	if ents, _ := os.ReadDir(opts.Cache); len(ents) != 3 { // the .deb, .lock and minimal-<key>
		t.Errorf("cache: %v", ents)
	}

	apt.calls = nil
	res, err = Build(context.Background(), opts)
	if err != nil || !res.UpToDate || extracts != 1 {
		t.Fatalf("second build should be up to date: %+v %v (extracts %d)", res, err, extracts)
	}
	if !reflect.DeepEqual(apt.calls, []string{"show linux-image-cloud-amd64"}) {
		t.Errorf("up-to-date check asked apt: %v", apt.calls)
	}

	opts.Force = true
	if res, err = Build(context.Background(), opts); err != nil || res.UpToDate || res.Downloaded || res.KernelCompiled || kb.builds != 1 {
		t.Fatalf("forced build (kernel from the cache): %+v %v", res, err)
	}
	opts.Force = false
	if !reflect.DeepEqual(first, read()) {
		t.Error("rebuild from the same inputs gave different bytes")
	}

	// A damaged output, a new agent or a different module list rebuilds.
	os.WriteFile(filepath.Join(opts.Out, InitrdFile), []byte("x"), 0o644)
	if res, err = Build(context.Background(), opts); err != nil || res.UpToDate {
		t.Fatalf("damaged output: %+v %v", res, err)
	}
	if !reflect.DeepEqual(first, read()) {
		t.Error("repaired output differs")
	}
	os.WriteFile(agentPath, fakeELF(elf.ET_DYN, "", nil), 0o755)
	if res, err = Build(context.Background(), opts); err != nil || res.UpToDate {
		t.Fatalf("new agent: %+v %v", res, err)
	}
	opts.Modules = reqs[:2]
	if res, err = Build(context.Background(), opts); err != nil || res.UpToDate || len(res.Manifest.LoadOrder) != 3 {
		t.Fatalf("new module list: %+v %v", res, err)
	}

	// A new fragment rebuilds the minimal kernel.
	opts.Fragment = []byte("CONFIG_64BIT=y\nCONFIG_SMP=y\n")
	if res, err = Build(context.Background(), opts); err != nil || res.UpToDate || !res.KernelCompiled || kb.builds != 2 {
		t.Fatalf("new fragment: %+v %v", res, err)
	}

	// A requested module the kernel lacks is an error naming it.
	opts.Modules = []ModuleRequest{{"virtiofs", "CONFIG_VIRTIO_FS", ""}}
	if _, err := Build(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "virtiofs") {
		t.Errorf("missing module: %v", err)
	}
	if ents, _ := os.ReadDir(opts.Cache); len(ents) != 3 {
		t.Errorf("scratch directories left in the cache: %v", ents)
	}
}

type fakeKernel struct {
	src    KernelSource
	builds int
}

func (f *fakeKernel) Source(context.Context) (*KernelSource, error) { s := f.src; return &s, nil }

func (f *fakeKernel) Build(_ context.Context, _ *KernelSource, recipe Recipe, dir string) (*BuiltKernel, error) {
	f.builds++
	return &BuiltKernel{Release: "6.1.192-gondolin", Vmlinux: []byte("fake vmlinux"), Config: append([]byte(nil), recipe.Fragment...)}, nil
}

func TestCheckFragment(t *testing.T) {
	frag := []byte("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\"\n")
	if err := CheckFragment(frag, []byte("CONFIG_A=y\nCONFIG_C=\"x\"\nCONFIG_D=y\n")); err != nil {
		t.Errorf("matching config: %v", err)
	}
	err := CheckFragment(frag, []byte("# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_C=\"x\"\n"))
	if err == nil || !strings.Contains(err.Error(), "CONFIG_A=n (want y)") || !strings.Contains(err.Error(), "CONFIG_B=y (want n)") {
		t.Errorf("mismatches: %v", err)
	}
}

func TestCacheKey(t *testing.T) {
	a := KernelSource{Package: "linux-source-6.1", Version: "6.1.192-2", Compiler: "gcc 12"}
	b := a
	b.Version = "6.1.193-1"
	x, y := Recipe{Fragment: []byte("x")}, Recipe{Fragment: []byte("y")}
	if a.CacheKey(x) == b.CacheKey(x) || a.CacheKey(x) == a.CacheKey(y) {
		t.Error("cache key ignores the source version or the fragment")
	}
	if a.CacheKey(x) != a.CacheKey(x) {
		t.Error("cache key not stable")
	}
	patched := Recipe{Fragment: x.Fragment, Patches: []kernel.Patch{{Name: "0001-a.patch", Data: []byte("1")}}}
	edited := Recipe{Fragment: x.Fragment, Patches: []kernel.Patch{{Name: "0001-a.patch", Data: []byte("2")}}}
	if a.CacheKey(patched) == a.CacheKey(x) || a.CacheKey(patched) == a.CacheKey(edited) {
		t.Error("cache key ignores the patches")
	}
}
