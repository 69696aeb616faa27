package imagebuild

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ModuleRequest is a kernel module the guest agent needs, with the config
// symbol that decides whether the kernel has it built in (=y: nothing to
// ship), as a module (=m: ship it and its dependencies) or not at all (error).
type ModuleRequest struct {
	Name    string // module name as the kernel knows it (underscores)
	Config  string // kernel config symbol, e.g. "CONFIG_VIRTIO_NET"
	Purpose string // why the agent needs it (printed and recorded)
}

// DefaultModules is what the gondolin agent needs from the guest kernel. The
// dependency closure (virtio, virtio_ring, failover, vsock, ...) is computed
// from the kernel package and need not be listed.
var DefaultModules = []ModuleRequest{
	{"virtio_pci", "CONFIG_VIRTIO_PCI", "virtio PCI transport (q35/pc machines)"},
	{"virtio_mmio", "CONFIG_VIRTIO_MMIO", "virtio MMIO transport (microvm machine)"},
	{"virtio_console", "CONFIG_VIRTIO_CONSOLE", "virtio-serial ports: agent channel"},
	{"fuse", "CONFIG_FUSE_FS", "FUSE core for virtio-fs"},
	{"virtiofs", "CONFIG_VIRTIO_FS", "virtio-fs: container rootfs and bind mounts"},
	{"virtio_net", "CONFIG_VIRTIO_NET", "virtio-net: guest NIC"},
	{"vmw_vsock_virtio_transport", "CONFIG_VIRTIO_VSOCKETS", "virtio-vsock: agent channel where vhost-vsock exists"},
	{"overlay", "CONFIG_OVERLAY_FS", "overlayfs for container mounts"},
	{"virtio_rng", "CONFIG_HW_RANDOM_VIRTIO", "virtio-rng: early entropy for the guest"},
}

// ModuleName returns the kernel's name for a module file: base name without
// .ko[.xz|.zst|.gz], with '-' replaced by '_' (virtio-rng.ko → virtio_rng).
func ModuleName(file string) string {
	base := path.Base(filepath.ToSlash(file))
	for _, ext := range []string{".ko.xz", ".ko.zst", ".ko.gz", ".ko"} {
		if s, ok := strings.CutSuffix(base, ext); ok {
			base = s
			break
		}
	}
	return strings.ReplaceAll(base, "-", "_")
}

// IsModuleFile reports whether name looks like a (possibly compressed) module.
func IsModuleFile(name string) bool {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// ModulesDep is a parsed modules.dep: module name → module file path (as
// written, relative to /lib/modules/<release>) and the names of the modules
// it depends on (depmod writes the transitive list; a direct list works too).
type ModulesDep map[string]ModuleDepEntry

// ModuleDepEntry is one line of modules.dep.
type ModuleDepEntry struct {
	Path string
	Deps []string
}

// ParseModulesDep parses depmod's modules.dep format:
//
//	kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
func ParseModulesDep(data []byte) (ModulesDep, error) {
	md := ModulesDep{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(line, ":")
		mod = strings.TrimSpace(mod)
		if !ok || !IsModuleFile(mod) {
			return nil, fmt.Errorf("modules.dep line %d: cannot parse %q", lineNo, line)
		}
		name := ModuleName(mod)
		if _, dup := md[name]; dup {
			return nil, fmt.Errorf("modules.dep line %d: module %s listed twice", lineNo, name)
		}
		e := ModuleDepEntry{Path: mod}
		for _, d := range strings.Fields(rest) {
			if !IsModuleFile(d) {
				return nil, fmt.Errorf("modules.dep line %d: %q is not a module file", lineNo, d)
			}
			e.Deps = append(e.Deps, ModuleName(d))
		}
		md[name] = e
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return md, nil
}

// DepsFunc returns the names of the modules a module depends on.
type DepsFunc func(name string) ([]string, error)

// LoadOrder returns the dependency closure of roots, ordered so that every
// module comes after all of its dependencies. The order is deterministic: roots
// are taken in the order given, each module's dependencies in name order.
// A dependency cycle is an error.
func LoadOrder(roots []string, deps DepsFunc) ([]string, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var order []string
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, name), " -> "))
		}
		state[name] = visiting
		ds, err := deps(name)
		if err != nil {
			return err
		}
		ds = append([]string(nil), ds...)
		sort.Strings(ds)
		for _, d := range ds {
			if d == name {
				continue
			}
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = done
		order = append(order, name)
		return nil
	}
	for _, r := range roots {
		if err := visit(r, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// ModulePlan says what to do with each requested module.
type ModulePlan struct {
	BuiltIn []ModuleRequest // =y: nothing to ship
	Modular []ModuleRequest // =m: shipped
	Order   []string        // closure of Modular, dependencies first
}

// PlanModules decides, from the kernel config, which requested modules are
// built in and which must be shipped, checks the latter exist (have), and
// computes their dependency closure in load order.
func PlanModules(cfg KernelConfig, reqs []ModuleRequest, have func(name string) bool, deps DepsFunc) (*ModulePlan, error) {
	p := &ModulePlan{}
	var roots []string
	for _, r := range reqs {
		switch cfg.State(r.Config) {
		case BuiltIn:
			p.BuiltIn = append(p.BuiltIn, r)
		case Module:
			if !have(r.Name) {
				return nil, fmt.Errorf("module %s: %s=m in the kernel config, but no %s.ko in the kernel package", r.Name, r.Config, r.Name)
			}
			p.Modular = append(p.Modular, r)
			roots = append(roots, r.Name)
		default:
			return nil, fmt.Errorf("module %s: neither built in nor a module (%s is not set in the kernel config)", r.Name, r.Config)
		}
	}
	order, err := LoadOrder(roots, func(name string) ([]string, error) {
		if !have(name) {
			return nil, fmt.Errorf("module %s: needed as a dependency but not in the kernel package", name)
		}
		return deps(name)
	})
	if err != nil {
		return nil, err
	}
	p.Order = order
	return p, nil
}

// Modinfo returns the key=value pairs of a module's .modinfo ELF section
// (keys like depends, vermagic, alias may repeat).
func Modinfo(ko []byte) (map[string][]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("not an ELF module: %w", err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	info := map[string][]string{}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		info[k] = append(info[k], v)
	}
	return info, nil
}

// ModinfoDeps returns the module names in a .modinfo's depends= field.
func ModinfoDeps(info map[string][]string) []string {
	var out []string
	for _, v := range info["depends"] {
		for _, d := range strings.Split(v, ",") {
			if d = strings.TrimSpace(d); d != "" {
				out = append(out, strings.ReplaceAll(d, "-", "_"))
			}
		}
	}
	return out
}

// DecompressModule returns the plain ELF module for a .ko, .ko.xz, .ko.zst or
// .ko.gz file's contents. The guest loads plain .ko files only. Decompressing
// keeps a signed module valid: the signature is over the uncompressed module
// and is appended to it.
func DecompressModule(file string, data []byte) ([]byte, error) {
	var r io.Reader
	switch {
	case strings.HasSuffix(file, ".ko"):
		return data, nil
	case strings.HasSuffix(file, ".ko.xz"):
		xr, err := xz.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		r = xr
	case strings.HasSuffix(file, ".ko.zst"):
		zr, err := zstd.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(file, ".ko.gz"):
		gr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		r = gr
	default:
		return nil, fmt.Errorf("%s: not a kernel module file", file)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: decompress: %w", file, err)
	}
	return out, nil
}

// ModuleTree is an extracted /lib/modules/<release> directory.
type ModuleTree struct {
	Root    string            // directory holding kernel/, modules.order, ...
	Release string            // base name of Root
	files   map[string]string // module name → path relative to Root
	dep     ModulesDep        // from modules.dep when the package ships one
	loaded  map[string][]byte // decompressed module contents
	info    map[string]map[string][]string
}

// OpenModuleTree indexes the module files below root. If root has a
// modules.dep it is used for dependencies; Debian's kernel packages ship none
// (depmod writes it at install time), in which case each module's .modinfo
// depends= field, written by modpost from the same symbol resolution depmod
// uses, gives its direct dependencies.
func OpenModuleTree(root string) (*ModuleTree, error) {
	t := &ModuleTree{
		Root:    root,
		Release: filepath.Base(root),
		files:   map[string]string{},
		loaded:  map[string][]byte{},
		info:    map[string]map[string][]string{},
	}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !IsModuleFile(d.Name()) {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		name := ModuleName(rel)
		if prev, dup := t.files[name]; dup {
			return fmt.Errorf("module %s found twice: %s and %s", name, prev, rel)
		}
		t.files[name] = rel
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(t.files) == 0 {
		return nil, fmt.Errorf("no kernel modules below %s", root)
	}
	if data, err := os.ReadFile(filepath.Join(root, "modules.dep")); err == nil {
		if t.dep, err = ParseModulesDep(data); err != nil {
			return nil, err
		}
	} else if !os.IsNotExist(err) {
		return nil, err
	}
	return t, nil
}

// Has reports whether the tree holds module name.
func (t *ModuleTree) Has(name string) bool { _, ok := t.files[name]; return ok }

// Count is the number of module files in the tree.
func (t *ModuleTree) Count() int { return len(t.files) }

// HasModulesDep reports whether dependencies come from modules.dep.
func (t *ModuleTree) HasModulesDep() bool { return t.dep != nil }

// File returns the module's path relative to Root.
func (t *ModuleTree) File(name string) string { return t.files[name] }

// Load returns the decompressed module.
func (t *ModuleTree) Load(name string) ([]byte, error) {
	if b, ok := t.loaded[name]; ok {
		return b, nil
	}
	rel, ok := t.files[name]
	if !ok {
		return nil, fmt.Errorf("module %s not in %s", name, t.Root)
	}
	raw, err := os.ReadFile(filepath.Join(t.Root, filepath.FromSlash(rel)))
	if err != nil {
		return nil, err
	}
	b, err := DecompressModule(rel, raw)
	if err != nil {
		return nil, err
	}
	t.loaded[name] = b
	return b, nil
}

// Modinfo returns the module's .modinfo fields.
func (t *ModuleTree) Modinfo(name string) (map[string][]string, error) {
	if i, ok := t.info[name]; ok {
		return i, nil
	}
	b, err := t.Load(name)
	if err != nil {
		return nil, err
	}
	i, err := Modinfo(b)
	if err != nil {
		return nil, fmt.Errorf("module %s (%s): %w", name, t.files[name], err)
	}
	t.info[name] = i
	return i, nil
}

// Deps returns the names of the modules name depends on.
func (t *ModuleTree) Deps(name string) ([]string, error) {
	if t.dep != nil {
		e, ok := t.dep[name]
		if !ok {
			return nil, fmt.Errorf("module %s is not in modules.dep", name)
		}
		return e.Deps, nil
	}
	info, err := t.Modinfo(name)
	if err != nil {
		return nil, err
	}
	return ModinfoDeps(info), nil
}
