package imagebuild

import "testing"

const sampleConfig = `#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.1.192 Kernel Configuration
#
CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"
CONFIG_VIRTIO=m
CONFIG_VIRTIO_PCI=m
CONFIG_VIRTIO_PCI_LEGACY=y
CONFIG_PCI=y
# CONFIG_VIRTIO_BLK_SCSI is not set
CONFIG_LOG_BUF_SHIFT=17

CONFIG_EXT4_FS=y
`

func TestParseKernelConfig(t *testing.T) {
	cfg, err := ParseKernelConfig([]byte(sampleConfig))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]Tristate{
		"CONFIG_VIRTIO":          Module,
		"VIRTIO_PCI":             Module, // prefix added
		"CONFIG_PCI":             BuiltIn,
		"CONFIG_EXT4_FS":         BuiltIn,
		"CONFIG_VIRTIO_BLK_SCSI": NotBuilt,
		"CONFIG_ABSENT":          NotBuilt,
		"CONFIG_LOG_BUF_SHIFT":   NotBuilt,
		"CONFIG_CC_VERSION_TEXT": NotBuilt,
	}
	for sym, want := range cases {
		if got := cfg.State(sym); got != want {
			t.Errorf("%s: %v, want %v", sym, got, want)
		}
	}
	if cfg["CONFIG_VIRTIO_BLK_SCSI"] != "n" || cfg["CONFIG_LOG_BUF_SHIFT"] != "17" ||
		cfg["CONFIG_CC_VERSION_TEXT"] != `"gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"` {
		t.Errorf("values: %q", cfg)
	}
	if _, err := ParseKernelConfig([]byte("CONFIG_OK=y\nnot a config line\n")); err == nil {
		t.Error("garbage accepted")
	}
}
