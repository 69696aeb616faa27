package backend

import (
	"testing"

	"github.com/earendil-works/gondolin-containerd/vmm/qemu"
)

func TestNew(t *testing.T) {
	b, err := New(QEMU, "/opt/qemu/bin/qemu-system-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if q, ok := b.(qemu.Backend); !ok || q.QEMU != "/opt/qemu/bin/qemu-system-x86_64" {
		t.Errorf("New(QEMU) = %#v", b)
	}
	if _, err := New("firecracker", ""); err == nil {
		t.Error("an unknown VMM was accepted")
	}
}
