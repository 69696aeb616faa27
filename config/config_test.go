package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/earendil-works/gondolin-containerd/oci"
	"github.com/earendil-works/gondolin-containerd/policy"
)

func TestDefaultConfigFindsImageBesideShim(t *testing.T) {
	cfg := Default("/opt/gondolin/bin")
	if cfg.KernelPath != "/opt/gondolin/share/gondolin/vmlinuz" || cfg.InitrdPath != "/opt/gondolin/share/gondolin/initrd.img" {
		t.Fatalf("got kernel %s initrd %s", cfg.KernelPath, cfg.InitrdPath)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

// The QEMU and virtiofsd `make build`/`make install` put into
// <prefix>/lib/gondolin are the defaults when they are there, each on its
// own; otherwise the system's (empty paths). A runtime config still names
// any other, or the system's with an empty path.
func TestDefaultVMMBinariesBesideShim(t *testing.T) {
	layout := func(t *testing.T, files ...string) (bin, lib string) {
		t.Helper()
		prefix := t.TempDir()
		bin, lib = filepath.Join(prefix, "bin"), filepath.Join(prefix, "lib", "gondolin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			p := filepath.Join(lib, filepath.FromSlash(f))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return bin, lib
	}
	for _, tc := range []struct {
		name      string
		files     []string
		qemu, fsd string // relative to lib; "" = the system's
	}{
		{"none", nil, "", ""},
		{"both", []string{BundledQEMU, BundledVirtiofsd}, BundledQEMU, BundledVirtiofsd},
		{"qemu only", []string{BundledQEMU}, BundledQEMU, ""},
		{"virtiofsd only", []string{BundledVirtiofsd}, "", BundledVirtiofsd},
		// Files elsewhere in lib/gondolin (the agent) are not binaries of the VMM.
		{"other files", []string{"gondolin-agent", "qemu/share/qemu/qboot.rom"}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, lib := layout(t, tc.files...)
			want := func(rel string) string {
				if rel == "" {
					return ""
				}
				return filepath.Join(lib, filepath.FromSlash(rel))
			}
			cfg := Default(bin)
			if cfg.QEMUPath != want(tc.qemu) || cfg.VirtiofsdPath != want(tc.fsd) {
				t.Errorf("qemu_path %q virtiofsd_path %q, want %q %q", cfg.QEMUPath, cfg.VirtiofsdPath, want(tc.qemu), want(tc.fsd))
			}
			if cfg.SnapshotBoot != SnapshotBootAuto {
				t.Errorf("snapshot_boot = %q, want auto", cfg.SnapshotBoot)
			}
			if err := cfg.validate(); err != nil {
				t.Errorf("defaults do not validate: %v", err)
			}
		})
	}

	t.Run("directory in place of a binary", func(t *testing.T) {
		bin, lib := layout(t)
		if err := os.MkdirAll(filepath.Join(lib, BundledVirtiofsd), 0o755); err != nil {
			t.Fatal(err)
		}
		if cfg := Default(bin); cfg.VirtiofsdPath != "" {
			t.Errorf("virtiofsd_path = %q for a directory, want the system's (\"\")", cfg.VirtiofsdPath)
		}
	})

	t.Run("runtime config names another", func(t *testing.T) {
		bin, lib := layout(t, BundledQEMU, BundledVirtiofsd)
		cfg := Default(bin)
		if err := parseConfig(cfg, "qemu_path = \"/usr/bin/qemu-system-x86_64\"\nvirtiofsd_path = \"\"\nsnapshot_boot = false\n"); err != nil {
			t.Fatal(err)
		}
		if cfg.QEMUPath != "/usr/bin/qemu-system-x86_64" || cfg.VirtiofsdPath != "" || cfg.SnapshotBoot != SnapshotBootOff {
			t.Errorf("got qemu_path %q virtiofsd_path %q snapshot_boot %q", cfg.QEMUPath, cfg.VirtiofsdPath, cfg.SnapshotBoot)
		}
		// Keys the file leaves out keep the bundled defaults.
		cfg = Default(bin)
		if err := parseConfig(cfg, "default_cpus = 2\n"); err != nil {
			t.Fatal(err)
		}
		if cfg.QEMUPath != filepath.Join(lib, BundledQEMU) || cfg.VirtiofsdPath != filepath.Join(lib, BundledVirtiofsd) {
			t.Errorf("unset keys: qemu_path %q virtiofsd_path %q, want the bundled ones", cfg.QEMUPath, cfg.VirtiofsdPath)
		}
	})
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(p, []byte(`
kernel_path = "/k"
accelerator = "tcg"
default_memory_mib = 256
boot_timeout = "90s"
allowed_annotations = ["io.gondolin.vm.*"]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(p, "/x/bin")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.KernelPath != "/k" || cfg.Accelerator != "tcg" || cfg.DefaultMemoryMiB != 256 || cfg.BootTimeout.Duration != 90*time.Second {
		t.Fatalf("config not applied: %+v", cfg)
	}
	if cfg.InitrdPath != "/x/share/gondolin/initrd.img" {
		t.Fatalf("unset keys should keep defaults, initrd = %s", cfg.InitrdPath)
	}
}

func TestSnapshotBootValues(t *testing.T) {
	if got := Default("/b").SnapshotBoot; got != SnapshotBootAuto {
		t.Errorf("default snapshot_boot = %q, want auto", got)
	}
	for text, want := range map[string]SnapshotBoot{
		`snapshot_boot = true`:   SnapshotBootOn,
		`snapshot_boot = false`:  SnapshotBootOff,
		`snapshot_boot = "auto"`: SnapshotBootAuto,
	} {
		cfg := Default("/b")
		if err := parseConfig(cfg, text); err != nil || cfg.SnapshotBoot != want {
			t.Errorf("%s: got %q, %v; want %q", text, cfg.SnapshotBoot, err, want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for text, want := range map[string]string{
		`kernal_path = "/k"`:        "unknown keys kernal_path",
		`accelerator = "hvf"`:       `accelerator = "hvf": accepted values are auto, kvm, tcg`,
		`boot_timeout = "soon"`:     "not a duration",
		`default_memory_mib = 16`:   "at least 64",
		`allowed_annotations=["x"]`: "must start with io.gondolin.",
		`log_level = "loud"`:        "log_level",
		`snapshot_boot = "yes"`:     `snapshot_boot = "yes": must be true, false or "auto"`,
		`snapshot_boot = 1`:         `must be true, false or "auto"`,
	} {
		err := parseConfig(Default("/b"), text)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want error containing %q", text, err, want)
		}
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	if _, err := Load("/nonexistent/config.toml", "/b"); err == nil {
		t.Fatal("a named config file that does not exist must be an error")
	}
}

func TestGuestKernelPicksImages(t *testing.T) {
	cfg := Default("/opt/g/bin")
	if cfg.GuestKernel != "minimal" || cfg.Machine != "auto" {
		t.Fatalf("defaults: guest_kernel %q machine %q", cfg.GuestKernel, cfg.Machine)
	}
	if err := parseConfig(cfg, `guest_kernel = "stock"`); err != nil {
		t.Fatal(err)
	}
	if cfg.KernelPath != "/opt/g/share/gondolin/vmlinuz-stock" || cfg.InitrdPath != "/opt/g/share/gondolin/initrd-stock.img" {
		t.Errorf("stock: kernel %s initrd %s", cfg.KernelPath, cfg.InitrdPath)
	}
	// Explicit paths win over guest_kernel.
	cfg = Default("/opt/g/bin")
	if err := parseConfig(cfg, "guest_kernel = \"stock\"\nkernel_path = \"/k\"\nmachine = \"q35\"\n"); err != nil {
		t.Fatal(err)
	}
	if cfg.KernelPath != "/k" || cfg.InitrdPath != "/opt/g/share/gondolin/initrd-stock.img" || cfg.Machine != "q35" {
		t.Errorf("explicit kernel_path: kernel %s initrd %s machine %s", cfg.KernelPath, cfg.InitrdPath, cfg.Machine)
	}
	for text, want := range map[string]string{
		`guest_kernel = "huge"`: `guest_kernel = "huge": accepted values are minimal, stock`,
		`machine = "virt"`:      `machine = "virt": accepted values are auto, q35, microvm`,
	} {
		if err := parseConfig(Default("/b"), text); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", text, err, want)
		}
	}
}

func TestNetworkConfigKeys(t *testing.T) {
	cfg := Default("/x/bin")
	err := parseConfig(cfg, `
audit_dir = "/var/log/g"
upstream_ca_file = "/etc/ca.pem"
upstream_dns = ["10.0.0.2", "127.0.0.1:5353"]
[default_annotations]
"io.gondolin.net.allow" = "api.example.com"
"io.gondolin.net.dns" = "trusted"
[upstream_hosts]
"api.example.test" = ["127.0.0.1"]
`)
	if err != nil {
		t.Fatal(err)
	}
	servers, err := cfg.UpstreamDNSServers()
	if err != nil || len(servers) != 2 || servers[0].String() != "10.0.0.2:53" || servers[1].String() != "127.0.0.1:5353" {
		t.Fatalf("upstream_dns = %v, %v", servers, err)
	}
	// The operator's default applies unless the container sets the key;
	// a key the operator does not allow cannot override it.
	s, err := oci.ParseAnnotations(map[string]string{oci.AnnotationNetDNS: "synthetic"}, cfg.Operator())
	if err != nil || len(s.Allow) != 1 || s.Allow[0].Host != "api.example.com" || s.DNS != policy.DNSSynthetic {
		t.Fatalf("defaults + container: %+v, %v", s, err)
	}
	cfg.AllowedAnnotations = []string{"io.gondolin.vm.*"}
	if _, err := oci.ParseAnnotations(map[string]string{oci.AnnotationNetAllow: "evil.example"}, cfg.Operator()); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("container loosened the operator's policy: %v", err)
	}
	if s, err := oci.ParseAnnotations(nil, cfg.Operator()); err != nil || s.DNS != policy.DNSTrusted {
		t.Fatalf("defaults alone: %+v, %v", s, err)
	}
}

func TestNetworkConfigErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{`audit_dir = "rel"`, "audit_dir"},
		{`upstream_dns = ["nope"]`, "upstream_dns"},
		{"[upstream_hosts]\n\"a.test\" = [\"x\"]", "not an IP"},
		{"[upstream_hosts]\n\"a.test\" = []", "at least one"},
		{"[default_annotations]\n\"io.gondolin.net.mode\" = \"wide\"", "default_annotations"},
	} {
		err := parseConfig(Default("/x/bin"), tc.text)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one naming %q", tc.text, err, tc.want)
		}
	}
}

func TestLimitsDefaultsAndValidation(t *testing.T) {
	cfg := Default("/x/bin")
	if cfg.Limits != DefaultLimits() {
		t.Fatalf("default config limits = %+v, want %+v", cfg.Limits, DefaultLimits())
	}
	if err := parseConfig(Default("/x/bin"), "[limits]\ntcp_flows = 10\n"); err != nil {
		t.Fatalf("a valid limit was refused: %v", err)
	}
	err := parseConfig(Default("/x/bin"), "[limits]\ntcp_flows = 0\n")
	if err == nil || !strings.Contains(err.Error(), "limits.tcp_flows = 0") {
		t.Fatalf("a zero limit: got %v, want an error naming limits.tcp_flows", err)
	}
	err = parseConfig(Default("/x/bin"), "[limits]\nnope = 1\n")
	if err == nil || !strings.Contains(err.Error(), "tcp_flows") {
		t.Fatalf("an unknown limit: got %v, want an error listing the accepted keys", err)
	}
}

// vmm names a backend vmm/backend knows; anything else is refused with the
// list of known ones.
func TestVMMKey(t *testing.T) {
	cfg := Default("/b")
	if cfg.VMM != "qemu" {
		t.Fatalf("default vmm = %q", cfg.VMM)
	}
	if err := parseConfig(Default("/b"), `vmm = "qemu"`); err != nil {
		t.Fatal(err)
	}
	err := parseConfig(Default("/b"), `vmm = "firecracker"`)
	if err == nil || !strings.Contains(err.Error(), `vmm = "firecracker": accepted values are qemu`) {
		t.Fatalf("got %v", err)
	}
}
