package hostcheck

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/earendil-works/gondolin-containerd/config"
	"github.com/earendil-works/gondolin-containerd/hostinstall"
	"github.com/earendil-works/gondolin-containerd/vmm"
	"github.com/earendil-works/gondolin-containerd/vmm/backend"
)

// The checks that ask the host: they run the binaries the shim would run
// and the probes it would make.

const shimBinary = hostinstall.ShimBinary

var (
	lookPath    = exec.LookPath
	nowFunc     = time.Now
	sortStrings = sort.Strings
)

// kvmProbe is the shim's own choice for accelerator = auto: KVM when
// /dev/kvm opens, speaks the stable API and the CPU has vmx or svm; the
// reason says why not.
func kvmProbe() (bool, string) {
	accel, reason, err := vmm.DetectAccelerator(vmm.AccelAuto)
	if err != nil {
		return false, err.Error()
	}
	return accel == vmm.AccelKVM, reason
}

// checkKVM says whether KVM is usable and what the config makes of it;
// it returns the accelerator VMs will run with.
func checkKVM(want string, probe func() (bool, string)) (Item, vmm.Accelerator) {
	usable, reason := probe()
	it := Item{Name: "kvm"}
	switch want {
	case string(vmm.AccelKVM):
		if !usable {
			it.Status, it.Summary = Fail, "accelerator = kvm in the runtime config, but KVM is not usable: "+reason+" (set accelerator = \"auto\" to fall back to TCG)"
			return it, vmm.AccelKVM
		}
		it.Status, it.Summary = OK, "usable: "+reason+"; accelerator = kvm"
		return it, vmm.AccelKVM
	case string(vmm.AccelTCG):
		state := "not usable: " + reason
		if usable {
			state = "usable, but accelerator = tcg in the runtime config: VMs run under TCG, much slower"
		}
		it.Status, it.Summary = Info, state
		return it, vmm.AccelTCG
	}
	if usable {
		it.Status, it.Summary = OK, "usable: "+reason+"; VMs run with KVM"
		return it, vmm.AccelKVM
	}
	it.Status, it.Summary = Warn, "not usable: "+reason+"; VMs run under TCG, which emulates the CPU (much slower)"
	return it, vmm.AccelTCG
}

// checkQEMU finds the VMM binary as the shim does (qemu_path, else
// qemu-system-x86_64 on PATH) and asks its version.
func checkQEMU(ctx context.Context, cfg *config.Config) (vmm.Backend, Item) {
	it := Item{Name: "qemu"}
	b, err := backend.New(backend.Kind(cfg.VMM), cfg.QEMUPath)
	if err != nil {
		it.Status, it.Summary = Fail, err.Error()
		return nil, it
	}
	path, err := b.Binary()
	if err != nil {
		it.Status, it.Summary = Fail, oneLine(err.Error())
		return nil, it
	}
	version, err := firstLine(ctx, path, "--version")
	if err != nil {
		it.Status, it.Summary = Fail, path+" does not run: "+err.Error()
		return nil, it
	}
	it.Status, it.Summary = OK, path+": "+version
	return b, it
}

// checkVirtiofsd finds the file server as the shim does and tells the
// Rust one from QEMU's C one.
func checkVirtiofsd(ctx context.Context, cfg *config.Config) (*vmm.Virtiofsd, Item) {
	it := Item{Name: "virtiofsd"}
	fsd, err := vmm.LookupVirtiofsd(ctx, cfg.VirtiofsdPath)
	if err != nil {
		it.Status, it.Summary = Fail, oneLine(err.Error())
		return nil, it
	}
	kind := "the Rust virtiofsd"
	if fsd.CanSaveState() != nil {
		kind = "QEMU's C virtiofsd (cannot save its state: no snapshots)"
	}
	version, err := firstLine(ctx, fsd.Path, "--version")
	if err != nil {
		version = "version unknown: " + err.Error()
	}
	it.Status, it.Summary = OK, fsd.Path+": "+kind+", "+version
	return fsd, it
}

// checkSnapshots says whether VMs resume from saved states: the shim's
// own tests (the backend's and the virtiofsd's CanSaveState) under the
// config's snapshot_boot. It reports whether they will.
func checkSnapshots(ctx context.Context, cfg *config.Config, b vmm.Backend, fsd *vmm.Virtiofsd) (Item, bool) {
	it := Item{Name: "snapshots"}
	if cfg.SnapshotBoot == config.SnapshotBootOff {
		it.Status, it.Summary = Info, "snapshot_boot = false: every VM boots"
		return it, false
	}
	if b == nil || fsd == nil {
		it.Status, it.Summary = Info, "not known: QEMU or virtiofsd is missing"
		return it, false
	}
	var why []string
	if err := b.CanSaveState(ctx); err != nil {
		why = append(why, oneLine(err.Error()))
	}
	if err := fsd.CanSaveState(); err != nil {
		why = append(why, oneLine(err.Error()))
	}
	if len(why) == 0 {
		it.Status, it.Summary = OK, "VMs resume from saved states in "+cfg.SnapshotDir+" (QEMU 9.0 or later and the Rust virtiofsd)"
		return it, true
	}
	it.Status = Warn
	it.Summary = "every VM boots: " + strings.Join(why, "; ")
	if cfg.SnapshotBoot == config.SnapshotBootOn {
		it.Summary += " (snapshot_boot = true: the shim logs a warning at each create)"
	}
	return it, false
}

// checkVsock reports /dev/vhost-vsock. Its absence costs nothing today:
// the agent channel is virtio-serial on every host (docs/limits.md).
func checkVsock(path string) Item {
	it := Item{Name: "vhost-vsock", Status: Info}
	if _, err := os.Stat(path); err != nil {
		it.Summary = "absent (" + errText(err) + "); not needed: the agent channel is virtio-serial"
		return it
	}
	it.Summary = path + " present; not used yet: the agent channel is virtio-serial"
	return it
}

// firstLine runs a binary and returns the first line it printed.
func firstLine(ctx context.Context, path string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	first, _, _ := strings.Cut(string(bytes.TrimSpace(out)), "\n")
	if err != nil {
		if first != "" {
			return "", errors.New(err.Error() + ": " + first)
		}
		return "", err
	}
	return strings.TrimSpace(first), nil
}
