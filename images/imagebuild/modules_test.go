package imagebuild

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// A modules.dep as depmod writes it (transitive dependency lists), for a
// subset of Debian's 6.1 cloud kernel.
const sampleModulesDep = `kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/net/vmw_vsock/vsock.ko
kernel/fs/fuse/fuse.ko:
kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/overlayfs/overlay.ko:
kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
`

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/drivers/char/hw_random/virtio-rng.ko": "virtio_rng",
		"virtio_net.ko.xz":                            "virtio_net",
		"/lib/modules/6.1/kernel/fs/fuse/fuse.ko.zst": "fuse",
		"overlay.ko.gz":                               "overlay",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseModulesDep(t *testing.T) {
	md, err := ParseModulesDep([]byte(sampleModulesDep))
	if err != nil {
		t.Fatal(err)
	}
	if len(md) != 16 {
		t.Errorf("%d entries, want 16", len(md))
	}
	e := md["virtio_net"]
	if e.Path != "kernel/drivers/net/virtio_net.ko" || !reflect.DeepEqual(e.Deps, []string{"net_failover", "failover", "virtio", "virtio_ring"}) {
		t.Errorf("virtio_net: %+v", e)
	}
	if e := md["virtio_rng"]; e.Path != "kernel/drivers/char/hw_random/virtio-rng.ko.xz" {
		t.Errorf("virtio_rng: %+v", e)
	}
	if len(md["virtio_ring"].Deps) != 0 {
		t.Errorf("virtio_ring deps %v", md["virtio_ring"].Deps)
	}
	for _, bad := range []string{"no colon here\n", "a.ko: b.txt\n", "a.ko:\na.ko:\n"} {
		if _, err := ParseModulesDep([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func depsFrom(md ModulesDep) DepsFunc {
	return func(n string) ([]string, error) { return md[n].Deps, nil }
}

func TestLoadOrder(t *testing.T) {
	md, err := ParseModulesDep([]byte(sampleModulesDep))
	if err != nil {
		t.Fatal(err)
	}
	roots := []string{"virtio_pci", "virtio_console", "virtiofs", "virtio_net", "vmw_vsock_virtio_transport", "overlay"}
	order, err := LoadOrder(roots, depsFrom(md))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
		"virtio_console",
		"fuse", "virtiofs",
		"failover", "net_failover", "virtio_net",
		"vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport",
		"overlay",
	}
	if !reflect.DeepEqual(order, want) {
		t.Fatalf("order\n got %v\nwant %v", order, want)
	}
	// Every dependency before its dependent, each module once.
	pos := map[string]int{}
	for i, n := range order {
		if _, dup := pos[n]; dup {
			t.Fatalf("%s twice", n)
		}
		pos[n] = i
	}
	for _, n := range order {
		for _, d := range md[n].Deps {
			if pos[d] >= pos[n] {
				t.Errorf("%s loads before its dependency %s", n, d)
			}
		}
	}
	// Direct dependencies only (as from .modinfo depends=) give the same order.
	direct := ModulesDep{
		"virtio_net":   {Deps: []string{"virtio_ring", "virtio", "net_failover"}},
		"net_failover": {Deps: []string{"failover"}},
		"virtio":       {Deps: []string{"virtio_ring"}},
	}
	order, err = LoadOrder([]string{"virtio_net"}, depsFrom(direct))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"failover", "net_failover", "virtio_ring", "virtio", "virtio_net"}; !reflect.DeepEqual(order, want) {
		t.Errorf("direct order %v, want %v", order, want)
	}
	cyc := ModulesDep{"a": {Deps: []string{"b"}}, "b": {Deps: []string{"c"}}, "c": {Deps: []string{"a"}}}
	if _, err := LoadOrder([]string{"a"}, depsFrom(cyc)); err == nil || !strings.Contains(err.Error(), "a -> b -> c -> a") {
		t.Errorf("cycle: %v", err)
	}
}

func TestPlanModules(t *testing.T) {
	md, err := ParseModulesDep([]byte(sampleModulesDep))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseKernelConfig([]byte(`CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_CONSOLE=m
CONFIG_VIRTIO_NET=m
CONFIG_OVERLAY_FS=m
CONFIG_VIRTIO_BLK=m
# CONFIG_VIRTIO_FS is not set
CONFIG_EXT4_FS=y
`))
	if err != nil {
		t.Fatal(err)
	}
	have := func(n string) bool { _, ok := md[n]; return ok }
	reqs := []ModuleRequest{
		{"virtio_pci", "CONFIG_VIRTIO_PCI", ""}, // =y although a file exists: skipped
		{"virtio_console", "CONFIG_VIRTIO_CONSOLE", ""},
		{"virtio_net", "CONFIG_VIRTIO_NET", ""},
	}
	p, err := PlanModules(cfg, reqs, have, depsFrom(md))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.BuiltIn) != 1 || p.BuiltIn[0].Name != "virtio_pci" || len(p.Modular) != 2 {
		t.Errorf("plan %+v", p)
	}
	if want := []string{"virtio_ring", "virtio", "virtio_console", "failover", "net_failover", "virtio_net"}; !reflect.DeepEqual(p.Order, want) {
		t.Errorf("order %v, want %v", p.Order, want)
	}
	_, err = PlanModules(cfg, []ModuleRequest{{"virtiofs", "CONFIG_VIRTIO_FS", ""}}, have, depsFrom(md))
	if err == nil || !strings.Contains(err.Error(), "virtiofs") || !strings.Contains(err.Error(), "neither built in nor a module") {
		t.Errorf("not set: %v", err)
	}
	_, err = PlanModules(cfg, []ModuleRequest{{"virtio_blk", "CONFIG_VIRTIO_BLK", ""}}, have, depsFrom(md))
	if err == nil || !strings.Contains(err.Error(), "virtio_blk") {
		t.Errorf("missing file: %v", err)
	}
	broken := ModulesDep{"overlay": {Deps: []string{"ghost"}}}
	_, err = PlanModules(cfg, []ModuleRequest{{"overlay", "CONFIG_OVERLAY_FS", ""}},
		func(n string) bool { _, ok := broken[n]; return ok }, depsFrom(broken))
	if err == nil || !strings.Contains(err.Error(), "ghost") {
		t.Errorf("missing dependency: %v", err)
	}
}

func compress(t *testing.T, ext string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch ext {
	case ".xz":
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	case ".zst":
		w, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	case ".gz":
		w := gzip.NewWriter(&b)
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	default:
		return data
	}
	return b.Bytes()
}

func TestDecompressModule(t *testing.T) {
	ko := fakeModule("virtio", "6.1.0-1-cloud-amd64", []string{"virtio_ring"})
	for _, ext := range []string{"", ".xz", ".zst", ".gz"} {
		got, err := DecompressModule("virtio.ko"+ext, compress(t, ext, ko))
		if err != nil {
			t.Fatalf("%s: %v", ext, err)
		}
		if !bytes.Equal(got, ko) {
			t.Errorf("%s: round trip differs", ext)
		}
	}
	if _, err := DecompressModule("virtio.ko.xz", []byte("not xz")); err == nil {
		t.Error("corrupt xz accepted")
	}
	if _, err := DecompressModule("virtio.txt", ko); err == nil {
		t.Error("non-module accepted")
	}
}

func TestModinfo(t *testing.T) {
	info, err := Modinfo(fakeModule("virtio_net", "6.1.0-1-cloud-amd64", []string{"virtio_ring", "virtio", "net-failover"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := ModinfoDeps(info); !reflect.DeepEqual(got, []string{"virtio_ring", "virtio", "net_failover"}) {
		t.Errorf("deps %v", got)
	}
	if info["name"][0] != "virtio_net" || !strings.HasPrefix(info["vermagic"][0], "6.1.0-1-cloud-amd64 ") {
		t.Errorf("info %v", info)
	}
	info, err = Modinfo(fakeModule("vsock", "r", nil))
	if err != nil || len(ModinfoDeps(info)) != 0 {
		t.Errorf("empty depends: %v %v", info, err)
	}
	if _, err := Modinfo(fakeELF(elf.ET_REL, "", nil)); err == nil {
		t.Error("module without .modinfo accepted")
	}
	if _, err := Modinfo([]byte("junk")); err == nil {
		t.Error("non-ELF accepted")
	}
}

const testRelease = "6.1.0-99-cloud-amd64"

// writeTree writes a fake /lib/modules/<release> tree; files maps relative
// path to contents.
func writeTree(t *testing.T, files map[string][]byte) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "lib", "modules", testRelease)
	for rel, data := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func fakeTreeFiles(t *testing.T) map[string][]byte {
	return map[string][]byte{
		"kernel/drivers/virtio/virtio_ring.ko":            fakeModule("virtio_ring", testRelease, nil),
		"kernel/drivers/virtio/virtio.ko.xz":              compress(t, ".xz", fakeModule("virtio", testRelease, []string{"virtio_ring"})),
		"kernel/drivers/char/hw_random/virtio-rng.ko.zst": compress(t, ".zst", fakeModule("virtio_rng", testRelease, []string{"virtio", "virtio_ring"})),
		"kernel/fs/overlayfs/overlay.ko":                  fakeModule("overlay", testRelease, nil),
		"modules.order":                                   []byte("kernel/fs/overlayfs/overlay.ko\n"),
	}
}

func TestModuleTreeModinfoDeps(t *testing.T) {
	tree, err := OpenModuleTree(writeTree(t, fakeTreeFiles(t)))
	if err != nil {
		t.Fatal(err)
	}
	if tree.Release != testRelease || tree.Count() != 4 || tree.HasModulesDep() {
		t.Errorf("tree %s %d %v", tree.Release, tree.Count(), tree.HasModulesDep())
	}
	if !tree.Has("virtio_rng") || tree.File("virtio_rng") != "kernel/drivers/char/hw_random/virtio-rng.ko.zst" {
		t.Errorf("virtio_rng: %q", tree.File("virtio_rng"))
	}
	order, err := LoadOrder([]string{"virtio_rng", "overlay"}, tree.Deps)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"virtio_ring", "virtio", "virtio_rng", "overlay"}; !reflect.DeepEqual(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
	ko, err := tree.Load("virtio")
	if err != nil || !bytes.Equal(ko, fakeModule("virtio", testRelease, []string{"virtio_ring"})) {
		t.Errorf("Load(virtio): %v", err)
	}
}

func TestModuleTreeModulesDep(t *testing.T) {
	files := fakeTreeFiles(t)
	// modules.dep, when present, wins over .modinfo.
	files["modules.dep"] = []byte("kernel/fs/overlayfs/overlay.ko: kernel/drivers/virtio/virtio_ring.ko\n" +
		"kernel/drivers/virtio/virtio_ring.ko:\n")
	tree, err := OpenModuleTree(writeTree(t, files))
	if err != nil {
		t.Fatal(err)
	}
	if !tree.HasModulesDep() {
		t.Fatal("modules.dep not used")
	}
	d, err := tree.Deps("overlay")
	if err != nil || !reflect.DeepEqual(d, []string{"virtio_ring"}) {
		t.Errorf("overlay deps %v %v", d, err)
	}
	if _, err := tree.Deps("virtio"); err == nil {
		t.Error("module missing from modules.dep accepted")
	}
}

func TestModuleTreeDuplicate(t *testing.T) {
	files := fakeTreeFiles(t)
	files["extra/virtio-ring.ko"] = fakeModule("virtio_ring", testRelease, nil)
	if _, err := OpenModuleTree(writeTree(t, files)); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate: %v", err)
	}
}
