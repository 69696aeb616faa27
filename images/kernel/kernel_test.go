package kernel

import (
	"strings"
	"testing"
)

// The fragment keeps the promises the image and the agent rely on.
func TestFragment(t *testing.T) {
	s := string(Fragment)
	for _, want := range []string{
		"# CONFIG_MODULES is not set", "CONFIG_PVH=y", "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y",
		"CONFIG_VIRTIO_FS=y", "CONFIG_VIRTIO_CONSOLE=y", "CONFIG_MEMCG=y", "CONFIG_BLK_DEV_INITRD=y",
		"# CONFIG_NETFILTER is not set", "CONFIG_SERIAL_8250_CONSOLE=y",
	} {
		if !strings.Contains(s, "\n"+want+"\n") {
			t.Errorf("fragment lacks %q", want)
		}
	}
}
