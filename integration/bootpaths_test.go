//go:build integration

package integration

import (
	"fmt"
	"strings"
	"testing"
)

// Every boot path the runtime config can choose runs containers correctly:
// the minimal kernel on microvm (virtio-mmio devices) and Debian's stock
// kernel on q35 (virtio-pci devices, modules from its initrd). Each boots a
// container that writes its rootfs, reaches an allowed upstream through the
// policy stack, and takes an exec with its exit code. The third path,
// resuming from a VM snapshot (snapshot_boot), is TestSnapshotBoot's.
func TestBootPaths(t *testing.T) {
	for _, bp := range []struct {
		guestKernel   string
		releaseSuffix string
		pciDevices    bool
	}{
		{"minimal", "-gondolin", false},
		{"stock", "-cloud-amd64", true},
	} {
		t.Run(bp.guestKernel, func(t *testing.T) {
			u := startUpstream(t)
			cfg, _ := runtimeConfig(t, u, fmt.Sprintf("guest_kernel = %q", bp.guestKernel))
			url := fmt.Sprintf("https://api.x.test:%d/hello", u.port)
			res, _ := egressRun(t, cfg, []string{fmt.Sprintf("io.gondolin.net.allow=api.x.test:%d", u.port)}, nil,
				`set -e; echo "release=$(uname -r)"; echo "pci=$(ls /sys/bus/pci/devices 2>/dev/null | wc -l)"
				echo rootfs-ok > /written; cat /written; curl -fsS `+url+`
				echo; dd if=/dev/zero bs=1048576 count=4 2>/dev/null | tr '\0' x`)
			if res.code != 0 {
				t.Fatalf("run: %s", res)
			}
			out := res.stdout
			if !strings.Contains(out, bp.releaseSuffix+"\n") || !strings.Contains(out, "rootfs-ok") || !strings.Contains(out, "hello from api.x.test") {
				t.Fatalf("want kernel *%s, a rootfs write and the upstream's answer: %s", bp.releaseSuffix, res)
			}
			// 4 MiB of output in one piece: the agent writes frames of up
			// to 256 KiB, which the stock kernel's virtio_console takes 32
			// KiB at a time (the minimal one's whole, patch 0003).
			if strings.Count(out, "x") < 4<<20 || !strings.Contains(out, strings.Repeat("x", 4<<20)) {
				t.Fatalf("want 4 MiB of x on stdout, got %d bytes of output with %d x", len(out), strings.Count(out, "x"))
			}
			if hasPCI := !strings.Contains(out, "pci=0\n"); hasPCI != bp.pciDevices {
				t.Fatalf("PCI devices present = %v, want %v (microvm has none, q35 has its virtio-pci devices): %s", hasPCI, bp.pciDevices, res)
			}

			id := startDetached(t, []string{"--runtime-config-path", cfg}, "sleep", "1000")
			res = ctr(t, nil, "task", "exec", "--exec-id", "e1", id, "sh", "-c", "uname -r; exit 5")
			if res.code != 5 || !strings.HasSuffix(strings.TrimSpace(res.stdout), bp.releaseSuffix) {
				t.Fatalf("exec: want exit 5 and the %s kernel: %s", bp.guestKernel, res)
			}
		})
	}
}
