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

// Every patch applies with -p1 to one named file and says why it exists.
func TestPatches(t *testing.T) {
	ps := Patches()
	if len(ps) == 0 {
		t.Fatal("no patches embedded")
	}
	for i, p := range ps {
		if i > 0 && ps[i-1].Name >= p.Name {
			t.Errorf("patches out of order: %s before %s", ps[i-1].Name, p.Name)
		}
		s := string(p.Data)
		desc, diff, ok := strings.Cut(s, "\n--- a/")
		if !ok || !strings.Contains(diff, "\n+++ b/") || strings.TrimSpace(desc) == "" {
			t.Errorf("%s: want a description, then a -p1 unified diff (--- a/…, +++ b/…)", p.Name)
		}
	}
}
