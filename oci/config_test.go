package oci

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigFindsImageBesideShim(t *testing.T) {
	cfg := DefaultConfig("/opt/gondolin/bin")
	if cfg.KernelPath != "/opt/gondolin/share/gondolin/vmlinuz" || cfg.InitrdPath != "/opt/gondolin/share/gondolin/initrd.img" {
		t.Fatalf("got kernel %s initrd %s", cfg.KernelPath, cfg.InitrdPath)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestLoadConfig(t *testing.T) {
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
	cfg, err := LoadConfig(p, "/x/bin")
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

func TestConfigErrors(t *testing.T) {
	for text, want := range map[string]string{
		`kernal_path = "/k"`:        "unknown keys kernal_path",
		`accelerator = "hvf"`:       `accelerator = "hvf": accepted values are auto, kvm, tcg`,
		`boot_timeout = "soon"`:     "not a duration",
		`default_memory_mib = 16`:   "at least 64",
		`allowed_annotations=["x"]`: "must start with io.gondolin.",
		`log_level = "loud"`:        "log_level",
	} {
		err := parseConfig(DefaultConfig("/b"), text)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want error containing %q", text, err, want)
		}
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	if _, err := LoadConfig("/nonexistent/config.toml", "/b"); err == nil {
		t.Fatal("a named config file that does not exist must be an error")
	}
}

func TestGuestKernelPicksImages(t *testing.T) {
	cfg := DefaultConfig("/opt/g/bin")
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
	cfg = DefaultConfig("/opt/g/bin")
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
		if err := parseConfig(DefaultConfig("/b"), text); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", text, err, want)
		}
	}
}
