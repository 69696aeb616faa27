// Package config is the runtime config: the operator's TOML file
// (/etc/gondolin/config.toml, or containerd's ConfigPath option) over the
// built-in defaults. Every value is checked when it loads, so a bad one
// fails with a message naming it and what would be accepted.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/earendil-works/gondolin-containerd/oci"
	"github.com/earendil-works/gondolin-containerd/policy"
	"github.com/earendil-works/gondolin-containerd/vmm/backend"
)

// DefaultPath is read when containerd passes no ConfigPath option.
const DefaultPath = "/etc/gondolin/config.toml"

// DefaultVMPoolSize is vm_pool_size's default: idle VMs per VM shape.
const DefaultVMPoolSize = 1

// MaxVMPoolSize bounds vm_pool_size.
const MaxVMPoolSize = 16

// DefaultSnapshotDir holds the saved VM states snapshot_boot restores.
const DefaultSnapshotDir = "/var/lib/gondolin/snapshots"

// DefaultAuditDir holds the per-container egress audit files.
const DefaultAuditDir = "/var/log/gondolin/audit"

// DefaultStateRoot holds the shim's state: one directory of sockets and
// state per container, and the MITM CA (ca/) its containers share.
const DefaultStateRoot = "/run/gondolin"

// Config is the runtime config, set by the operator.
type Config struct {
	// GuestKernel picks the guest image `make images` installs: "minimal"
	// (vmlinuz + initrd.img, the default) or "stock" (Debian's cloud kernel:
	// vmlinuz-stock + initrd-stock.img). KernelPath and InitrdPath, when
	// set, win over it.
	GuestKernel string `toml:"guest_kernel"`
	// KernelPath and InitrdPath are the guest image (make images).
	KernelPath string `toml:"kernel_path"`
	InitrdPath string `toml:"initrd_path"`
	// Machine is the QEMU machine: auto (microvm for a kernel QEMU can boot
	// through PVH, i.e. the minimal one; q35 otherwise), q35 or microvm.
	Machine string `toml:"machine"`
	// VMM names the virtual machine monitor backend (vmm/backend): only
	// "qemu" so far.
	VMM string `toml:"vmm"`
	// QEMUPath and VirtiofsdPath name the binaries. They default to the
	// pinned QEMU and virtiofsd installed beside the shim (BundledQEMU,
	// BundledVirtiofsd) when those are there; empty means the system's
	// (qemu-system-x86_64 on PATH, the virtiofsd vmm.LookupVirtiofsd finds).
	QEMUPath      string `toml:"qemu_path"`
	VirtiofsdPath string `toml:"virtiofsd_path"`
	// Accelerator is auto (KVM when usable, else TCG), kvm or tcg.
	Accelerator string `toml:"accelerator"`
	// DefaultMemoryMiB and DefaultCPUs size a VM whose container sets no
	// resource limits.
	DefaultMemoryMiB uint64 `toml:"default_memory_mib"`
	DefaultCPUs      uint32 `toml:"default_cpus"`
	// MemoryOverheadMiB is added to a container's memory limit for the
	// guest kernel and agent.
	MemoryOverheadMiB uint64 `toml:"memory_overhead_mib"`
	// BootTimeout bounds how long the guest agent may take to answer.
	BootTimeout Duration `toml:"boot_timeout"`
	// SnapshotBoot resumes each VM from a saved state of a VM booted once
	// with the same configuration (kept in SnapshotDir) instead of booting
	// it. It needs QEMU 9.0 or later and the Rust virtiofsd: "auto" (the
	// default) uses it when both are there, true always tries and warns
	// when it cannot, false never. A VM that cannot be restored boots
	// instead, and the shim log says why.
	SnapshotBoot SnapshotBoot `toml:"snapshot_boot"`
	SnapshotDir  string       `toml:"snapshot_dir"`
	// VMPoolSize is how many VMs of each VM shape a pool process keeps
	// started and idle, so that a container's create takes one instead of
	// starting its own (runtime/vmpool.go); 0 turns the pool off. Idle
	// VMs cost memory (and a little CPU under TCG) while nobody uses
	// them, and the pool exits, stopping them, after VMPoolIdle without a
	// create.
	VMPoolSize int      `toml:"vm_pool_size"`
	VMPoolIdle Duration `toml:"vm_pool_idle"`
	// LogLevel is the shim's log level (debug, info, warn, error).
	LogLevel string `toml:"log_level"`
	// AllowedAnnotations lists the io.gondolin.* annotations containers may
	// set, as exact keys or prefixes ending in "*" (io.gondolin.secret.*).
	// Empty means all.
	AllowedAnnotations []string `toml:"allowed_annotations"`
	// DefaultAnnotations are the operator's default policy: io.gondolin.*
	// annotations applied to every container that does not set the key
	// itself. Together with allowed_annotations they fix a policy a
	// container cannot loosen.
	DefaultAnnotations map[string]string `toml:"default_annotations"`

	// AuditDir receives one <namespace>/<container>.jsonl egress audit
	// file per container; it outlives the container.
	AuditDir string `toml:"audit_dir"`
	// UpstreamHosts maps host names to the addresses the egress proxy
	// dials for them instead of resolving them. The operator vouches for
	// these addresses: they are reachable even in internal ranges. Meant
	// for tests and for pinning internal services.
	UpstreamHosts map[string][]string `toml:"upstream_hosts"`
	// UpstreamCAFile adds PEM roots for verifying upstream TLS servers,
	// besides the host's system roots.
	UpstreamCAFile string `toml:"upstream_ca_file"`
	// UpstreamDNS are the resolvers ("IP" or "IP:port") asked for
	// net.dns=trusted|open and for upstream names; empty means the host's
	// /etc/resolv.conf.
	UpstreamDNS []string `toml:"upstream_dns"`

	// Limits bound what one container's guest can make the host spend.
	Limits Limits `toml:"limits"`

	// Policies are named egress policies containers pick with
	// io.gondolin.policy=NAME (docs/configuration.md, [policies]).
	Policies map[string]NamedPolicy `toml:"policies"`
	// Secrets name where the shim reads secrets' real values on the host
	// ([secrets.NAME] file or env), so io.gondolin.secret.NAME alone
	// injects one and no container manager stores it.
	Secrets map[string]SecretSource `toml:"secrets"`
	// policies are Policies, parsed when the config loads.
	policies map[string]policy.Rules

	// shareDir is where `make install` puts the guest images.
	shareDir string
}

// Guest image file names in the share directory (see images/imagebuild).
const (
	GuestKernelMinimal = "minimal"
	GuestKernelStock   = "stock"
)

var guestImages = map[string][2]string{
	GuestKernelMinimal: {"vmlinuz", "initrd.img"},
	GuestKernelStock:   {"vmlinuz-stock", "initrd-stock.img"},
}

// SnapshotBoot is snapshot_boot: true, false or "auto".
type SnapshotBoot string

const (
	SnapshotBootAuto SnapshotBoot = "auto"
	SnapshotBootOn   SnapshotBoot = "true"
	SnapshotBootOff  SnapshotBoot = "false"
)

// UnmarshalTOML takes a TOML boolean or the string "auto".
func (b *SnapshotBoot) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case bool:
		*b = SnapshotBootOff
		if v {
			*b = SnapshotBootOn
		}
		return nil
	case string:
		if v == string(SnapshotBootAuto) {
			*b = SnapshotBootAuto
			return nil
		}
	}
	return fmt.Errorf("snapshot_boot = %#v: must be true, false or \"auto\"", v)
}

// Duration is a time.Duration written as "30s" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 30s or 2m: %w", b, err)
	}
	d.Duration = v
	return nil
}

// The QEMU and virtiofsd `make build` and `make install` put into
// lib/gondolin beside the shim's bin directory (hack/vmm-bundle.sh): pinned
// builds that can save and resume a VM, which the system's may not
// (Debian 12's QEMU 7.2 cannot). Slash-separated, relative to that
// directory.
const (
	BundledQEMU      = "qemu/bin/qemu-system-x86_64"
	BundledVirtiofsd = "virtiofsd"
)

// Default is the built-in config. exeDir is the directory of the shim
// binary: the guest image is looked for in ../share/gondolin beside it, and
// the QEMU and virtiofsd in ../lib/gondolin, the layout `make install` and
// the build tree both use. Where those binaries are missing the system's
// are used.
func Default(exeDir string) *Config {
	share := filepath.Join(filepath.Dir(exeDir), "share", "gondolin")
	lib := filepath.Join(filepath.Dir(exeDir), "lib", "gondolin")
	return &Config{
		GuestKernel:       GuestKernelMinimal,
		KernelPath:        filepath.Join(share, guestImages[GuestKernelMinimal][0]),
		InitrdPath:        filepath.Join(share, guestImages[GuestKernelMinimal][1]),
		Machine:           "auto",
		VMM:               string(backend.QEMU),
		QEMUPath:          bundled(lib, BundledQEMU),
		VirtiofsdPath:     bundled(lib, BundledVirtiofsd),
		Accelerator:       "auto",
		DefaultMemoryMiB:  512,
		DefaultCPUs:       1,
		MemoryOverheadMiB: 128,
		BootTimeout:       Duration{60 * time.Second},
		SnapshotBoot:      SnapshotBootAuto,
		SnapshotDir:       DefaultSnapshotDir,
		VMPoolSize:        DefaultVMPoolSize,
		VMPoolIdle:        Duration{10 * time.Minute},
		LogLevel:          "info",
		AuditDir:          DefaultAuditDir,
		Limits:            DefaultLimits(),
		shareDir:          share,
	}
}

// bundled is dir/name when that is a file, else "" (the system's binary).
// A file there that cannot run is not passed over: starting it fails with
// an error naming it, rather than quietly giving VMs another QEMU.
func bundled(dir, name string) string {
	p := filepath.Join(dir, filepath.FromSlash(name))
	if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
		return ""
	}
	return p
}

// Load reads the runtime config at path over the defaults. An empty
// path means DefaultPath if it exists, else the defaults alone.
func Load(path, exeDir string) (*Config, error) {
	cfg := Default(exeDir)
	if path == "" {
		if _, err := os.Stat(DefaultPath); err != nil {
			return cfg, nil
		}
		path = DefaultPath
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read runtime config: %w", err)
	}
	if err := parseConfig(cfg, string(b)); err != nil {
		return nil, fmt.Errorf("runtime config %s: %w", path, err)
	}
	return cfg, nil
}

func parseConfig(cfg *Config, text string) error {
	md, err := toml.Decode(text, cfg)
	if err != nil {
		return err
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return fmt.Errorf("unknown keys %s: accepted keys are guest_kernel, kernel_path, initrd_path, machine, vmm, qemu_path, virtiofsd_path, accelerator, default_memory_mib, default_cpus, memory_overhead_mib, boot_timeout, snapshot_boot, snapshot_dir, log_level, allowed_annotations, default_annotations, audit_dir, upstream_hosts, upstream_ca_file, upstream_dns, limits (table: "+limitKeys+"), policies.NAME (tables: mode, dns, allow, allow_internal, tcp_allow, secrets), secrets.NAME (tables: file or env)", strings.Join(keys, ", "))
	}
	if files, ok := guestImages[cfg.GuestKernel]; ok && cfg.shareDir != "" {
		if !md.IsDefined("kernel_path") {
			cfg.KernelPath = filepath.Join(cfg.shareDir, files[0])
		}
		if !md.IsDefined("initrd_path") {
			cfg.InitrdPath = filepath.Join(cfg.shareDir, files[1])
		}
	}
	return cfg.validate()
}

func (c *Config) validate() error {
	var errs []error
	if _, ok := guestImages[c.GuestKernel]; !ok {
		errs = append(errs, fmt.Errorf("guest_kernel = %q: accepted values are minimal, stock", c.GuestKernel))
	}
	switch c.Machine {
	case "auto", "q35", "microvm":
	default:
		errs = append(errs, fmt.Errorf("machine = %q: accepted values are auto, q35, microvm", c.Machine))
	}
	if !backend.Known(backend.Kind(c.VMM)) {
		errs = append(errs, fmt.Errorf("vmm = %q: accepted values are %s", c.VMM, backend.KindList()))
	}
	switch c.Accelerator {
	case "auto", "kvm", "tcg":
	default:
		errs = append(errs, fmt.Errorf("accelerator = %q: accepted values are auto, kvm, tcg", c.Accelerator))
	}
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level = %q: accepted values are trace, debug, info, warn, error", c.LogLevel))
	}
	if c.DefaultMemoryMiB < oci.MinMemoryMiB {
		errs = append(errs, fmt.Errorf("default_memory_mib = %d: at least %d", c.DefaultMemoryMiB, oci.MinMemoryMiB))
	}
	if c.DefaultCPUs < 1 {
		errs = append(errs, fmt.Errorf("default_cpus = %d: at least 1", c.DefaultCPUs))
	}
	if c.BootTimeout.Duration <= 0 {
		errs = append(errs, fmt.Errorf("boot_timeout = %s: must be positive", c.BootTimeout.Duration))
	}
	for _, p := range c.AllowedAnnotations {
		if !strings.HasPrefix(p, oci.AnnotationPrefix) {
			errs = append(errs, fmt.Errorf("allowed_annotations entry %q: must start with %s", p, oci.AnnotationPrefix))
		}
	}
	for key := range c.DefaultAnnotations {
		if !strings.HasPrefix(key, oci.AnnotationPrefix) {
			errs = append(errs, fmt.Errorf("default_annotations: %s is not an %s* annotation", key, oci.AnnotationPrefix))
		}
	}
	if c.VMPoolSize < 0 || c.VMPoolSize > MaxVMPoolSize {
		errs = append(errs, fmt.Errorf("vm_pool_size = %d: 0 (off) to %d", c.VMPoolSize, MaxVMPoolSize))
	}
	if c.VMPoolIdle.Duration < time.Minute {
		errs = append(errs, fmt.Errorf("vm_pool_idle = %s: at least 1m", c.VMPoolIdle.Duration))
	}
	if !filepath.IsAbs(c.SnapshotDir) {
		errs = append(errs, fmt.Errorf("snapshot_dir = %q: must be an absolute path", c.SnapshotDir))
	}
	if !filepath.IsAbs(c.AuditDir) {
		errs = append(errs, fmt.Errorf("audit_dir = %q: must be an absolute path", c.AuditDir))
	}
	for name, addrs := range c.UpstreamHosts {
		if len(addrs) == 0 {
			errs = append(errs, fmt.Errorf("upstream_hosts.%q: list at least one IP address", name))
		}
		for _, a := range addrs {
			if _, err := netip.ParseAddr(a); err != nil {
				errs = append(errs, fmt.Errorf("upstream_hosts.%q: %q is not an IP address", name, a))
			}
		}
	}
	if _, err := c.UpstreamDNSServers(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Limits.validate()...)
	errs = append(errs, c.parsePolicies()...)
	errs = append(errs, c.checkSecretSources()...)
	// Checked like a container's (after the policies they may name), but
	// not against allowed_annotations: the operator sets these.
	if _, err := oci.ParseAnnotations(c.DefaultAnnotations, oci.Operator{Policies: c.policies}); err != nil {
		errs = append(errs, fmt.Errorf("default_annotations: %w", err))
	}
	return errors.Join(errs...)
}

// UpstreamDNSServers parses upstream_dns; an entry without a port means 53.
func (c *Config) UpstreamDNSServers() ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, s := range c.UpstreamDNS {
		if ap, err := netip.ParseAddrPort(s); err == nil {
			out = append(out, ap)
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("upstream_dns entry %q: accepted forms are IP or IP:port", s)
		}
		out = append(out, netip.AddrPortFrom(a, 53))
	}
	return out, nil
}

// Operator is what the config says about containers' annotations.
func (c *Config) Operator() oci.Operator {
	return oci.Operator{DefaultAnnotations: c.DefaultAnnotations, AllowedAnnotations: c.AllowedAnnotations, Policies: c.policies}
}

// VMDefaults are the config's VM sizes.
func (c *Config) VMDefaults() oci.VMDefaults {
	return oci.VMDefaults{MemoryMiB: c.DefaultMemoryMiB, CPUs: c.DefaultCPUs, OverheadMiB: c.MemoryOverheadMiB}
}
