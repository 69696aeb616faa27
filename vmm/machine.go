package vmm

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// Machine is the virtual machine model the guest runs on.
type Machine string

const (
	// MachineAuto picks from the kernel image: MachineMicrovm for an ELF
	// kernel with a PVH entry point (the minimal kernel `make images`
	// builds), MachineQ35 for anything else (a bzImage such as Debian's).
	MachineAuto Machine = "auto"
	// MachineQ35 is a PC with PCI(e), ACPI and firmware: boots any kernel.
	MachineQ35 Machine = "q35"
	// MachineMicrovm has no PCI, no firmware tables to speak of and
	// virtio-mmio devices; it needs a kernel with virtio-mmio built in.
	MachineMicrovm Machine = "microvm"
)

// DetectMachine resolves MachineAuto (or "") for the kernel at path, with a
// reason for the logs; an explicit machine is returned as is.
func DetectMachine(want Machine, kernel string) (Machine, string, error) {
	switch want {
	case MachineQ35, MachineMicrovm:
		return want, "set in the runtime config", nil
	case MachineAuto, "":
	default:
		return "", "", fmt.Errorf("machine %q is not valid: use auto, q35 or microvm", want)
	}
	f, err := os.Open(kernel)
	if err != nil {
		return "", "", fmt.Errorf("guest kernel: %w", err)
	}
	defer f.Close()
	if HasPVHEntry(f) {
		return MachineMicrovm, "the kernel is an ELF image with a PVH entry point", nil
	}
	return MachineQ35, "the kernel is not a PVH ELF image (e.g. a bzImage)", nil
}

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY, the note QEMU boots an
// ELF kernel through (PVH).
const xenElfnotePhys32Entry = 18

// HasPVHEntry reports whether r holds an x86-64 ELF kernel with a PVH entry
// note (CONFIG_PVH), which QEMU can boot directly, without firmware or a
// decompressor.
func HasPVHEntry(r io.ReaderAt) bool {
	f, err := elf.NewFile(r)
	if err != nil {
		return false
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return false
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > 1<<20 {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			continue
		}
		for len(b) >= 12 {
			nsz, dsz, typ := int(binary.LittleEndian.Uint32(b)), int(binary.LittleEndian.Uint32(b[4:])), binary.LittleEndian.Uint32(b[8:])
			if nsz > len(b)-12 {
				break
			}
			if string(bytes.TrimRight(b[12:12+nsz], "\x00")) == "Xen" && typ == xenElfnotePhys32Entry {
				return true
			}
			n := 12 + (nsz+3)&^3 + (dsz+3)&^3
			if n > len(b) || n <= 0 {
				break
			}
			b = b[n:]
		}
	}
	return false
}
