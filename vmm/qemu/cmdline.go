// Package qemu is the QEMU backend of package vmm.
package qemu

import (
	"fmt"
	"strings"

	"github.com/earendil-works/gondolin-containerd/vmm"
)

// baseKernelArgs keep the guest kernel quick to boot and quiet on a serial
// console that is slow under emulation. panic=-1 with -no-reboot turns a
// guest crash (or the agent, PID 1, dying) into a QEMU exit.
var baseKernelArgs = []string{
	"console=ttyS0",
	"quiet",
	"panic=-1",
	"reboot=t",
	"tsc=reliable",
	"no_timer_check",
	"rcupdate.rcu_expedited=1",
	"i8042.noaux",
	"i8042.nomux",
	"i8042.nopnp",
	"i8042.dumbkbd",
	"8250.nr_uarts=1",
	"cryptomgr.notests",
	"random.trust_cpu=on",
}

// serialPorts is the virtio-serial device's port count: the reserved port
// 0 and the agent channel.
const serialPorts = 2

// channelChardev is the id of the agent channel's chardev.
const channelChardev = "channel"

// channelPort is the id of the agent channel's port device: with an id,
// QEMU reports the guest opening and closing the port (VSERPORT_CHANGE),
// which HandOffChannel waits for.
const channelPort = "channel0"

// tcgCPU is the CPU model under TCG.
const tcgCPU = "max,-erms,-fsrm"

// hostTSCKHz is replaced in tests.
var hostTSCKHz = vmm.HostTSCKHz

// mmioQueueSize caps the virtqueues of virtio-mmio devices (the patched
// minimal kernel's virtio_mmio.max_queue_size; other kernels ignore it).
// QEMU offers 1024 entries for every queue there, and virtio-serial then
// holds 8 MiB of receive buffers in the guest; 256 is virtio-net's own
// default on PCI and more than the channel keeps in flight.
const mmioQueueSize = 256

// pageReportingOrder is the smallest block of free guest memory, as a
// power of two of pages, that the balloon reports to QEMU for release (the
// patched minimal kernel's page_reporting.page_reporting_order; 6.1 would
// otherwise use 4 MiB blocks on x86_64). Memory the guest frees while it
// boots (initrd, init sections, alignment gaps of the kernel image, ~10
// MiB) merges into blocks of 512 KiB to 2 MiB, which 4 MiB never catches.
// 128 KiB keeps the number of reports (one fallocate each) small.
const pageReportingOrder = 5

// accelKernelArgs are added for an accelerator and vCPU count, on any
// machine.
func accelKernelArgs(accel vmm.Accelerator, cpus uint32) []string {
	if accel != vmm.AccelTCG {
		return nil
	}
	// TCG keeps the host code it translated from a guest page until the
	// guest CPU writes to that page. virtiofsd (a vhost-user back-end)
	// writes file data straight into guest memory, which TCG never sees:
	// a page that held code, freed and refilled with another file's code
	// by virtiofsd, would run the old translation. QEMU 7.2 finds a
	// translation by virtual and physical address, so that takes the same
	// virtual address (e.g. two static binaries, both at 0x401000); QEMU
	// 8+ finds it by physical address alone, and user processes of
	// binaries read over virtio-fs crash at once. init_on_alloc=1 makes
	// the guest zero every page it allocates, a CPU write that discards
	// the page's translations before virtiofsd fills it.
	args := []string{"init_on_alloc=1"}
	if cpus == 1 {
		// A kernel built for SMP that finds one CPU rewrites every LOCK
		// prefix in its text to a NOP (SMP alternatives). Under TCG each
		// rewrite costs far more than the prefix saves: it took ~60 ms
		// of the boot.
		args = append(args, "noreplace-smp")
	}
	return args
}

// machineKernelArgs are added for a machine, accelerator and vCPU count.
func machineKernelArgs(m vmm.Machine, accel vmm.Accelerator, cpus uint32) []string {
	if m != vmm.MachineMicrovm {
		return nil
	}
	args := []string{
		fmt.Sprintf("virtio_mmio.max_queue_size=%d", mmioQueueSize),
		fmt.Sprintf("page_reporting.page_reporting_order=%d", pageReportingOrder),
	}
	if accel != vmm.AccelTCG {
		return args
	}
	// Under TCG the guest has neither kvmclock nor a TSC-deadline timer, so
	// the kernel calibrates the TSC and then the local APIC timer against
	// the emulated PIT. The quick TSC calibration fails now and then, leaving
	// the guest on the jiffies clock: give it the TSC rate (the host's, under
	// TCG). With one vCPU, tick from the PIT instead of the local APIC timer,
	// which spares its calibration and verification (~0.25 s); with more,
	// the broadcast tick that needs is slower than calibrating.
	if khz := hostTSCKHz(); khz > 0 {
		args = append(args, fmt.Sprintf("tsc_early_khz=%d", khz))
	}
	if cpus == 1 {
		args = append(args, "noapictimer")
	}
	return args
}

// devices names QEMU's virtio device models for each transport: PCI on q35,
// MMIO on microvm.
type devices struct {
	serial, rng, fs, balloon, net string
}

var machineDevices = map[vmm.Machine]devices{
	vmm.MachineQ35:     {"virtio-serial-pci", "virtio-rng-pci", "vhost-user-fs-pci", "virtio-balloon-pci", "virtio-net-pci"},
	vmm.MachineMicrovm: {"virtio-serial-device", "virtio-rng-device", "vhost-user-fs-device", "virtio-balloon-device", "virtio-net-device"},
}

// machineArg is -machine for each model. microvm: no option ROMs, the ISA
// serial port for the console, the CMOS RTC for the wall clock (TCG has no
// kvmclock), no ACPI (the minimal kernel has none: CPUs come from the MP
// table, and QEMU lists the virtio-mmio devices on the kernel command line
// instead). The PIT stays (without it the guest has no tick under TCG, see
// machineKernelArgs) and so does the PIC (without it secondary vCPUs never
// come up).
var machineArg = map[vmm.Machine]string{
	vmm.MachineQ35:     "q35",
	vmm.MachineMicrovm: "microvm,x-option-roms=off,pit=on,pic=on,isa-serial=on,rtc=on,acpi=off",
}

// sandboxArg turns on QEMU's seccomp filter with every optional deny.
const sandboxArg = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// Args builds QEMU's command line for cfg. QMPSocket is the monitor socket.
// cfg.Machine must be resolved (DetectMachine); "" means q35.
func Args(cfg vmm.Config, qmpSocket string) ([]string, error) {
	if err := validate(cfg); err != nil {
		return nil, err
	}
	machine := cfg.Machine
	if machine == "" {
		machine = vmm.MachineQ35
	}
	dev := machineDevices[machine]
	kernelArgs := append([]string{}, baseKernelArgs...)
	kernelArgs = append(kernelArgs, accelKernelArgs(cfg.Accelerator, cfg.CPUs)...)
	kernelArgs = append(kernelArgs, machineKernelArgs(machine, cfg.Accelerator, cfg.CPUs)...)
	kernelArgs = append(kernelArgs, cfg.KernelArgs...)
	mem := fmt.Sprintf("%dM", cfg.MemoryMiB)
	args := []string{
		"-name", "gondolin-" + cfg.ID + ",debug-threads=on",
		"-machine", machineArg[machine] + ",memory-backend=mem",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-m", mem,
		"-smp", fmt.Sprint(cfg.CPUs),
		// virtio-fs needs guest memory the file server can map: shared memfd.
		"-object", "memory-backend-memfd,id=mem,size=" + mem + ",share=on",
		"-kernel", cfg.Kernel,
		"-initrd", cfg.Initrd,
		"-append", strings.Join(kernelArgs, " "),
		"-chardev", consoleChardev(cfg),
		"-serial", "chardev:console",
		// Two ports: port 0 is reserved for a virtconsole, the agent
		// channel takes 1. QEMU's default of 31 makes the guest set up
		// two virtqueues per port, each with its ring and bookkeeping:
		// ~1.3 MiB of each VM's memory (guest RAM and QEMU's) for ports
		// nothing opens.
		"-device", dev.serial + ",id=ser0,max_ports=" + fmt.Sprint(serialPorts),
		"-chardev", "socket,id=" + channelChardev + ",path=" + cfg.ChannelSocket + ",server=on,wait=off",
		"-device", "virtserialport,bus=ser0.0,chardev=" + channelChardev + ",name=" + cfg.ChannelName + ",id=" + channelPort,
		"-device", dev.rng,
		"-qmp", "unix:" + qmpSocket + ",server=on,wait=off",
		// QEMU runs as root and emulates devices for a hostile guest:
		// its seccomp filter denies what a device-emulation bug could
		// turn into more (obsolete system calls, setuid and friends,
		// spawning processes, changing scheduling and limits). Snapshots
		// are saved and loaded through file: URIs, never exec:, so
		// spawn=deny costs nothing.
		"-sandbox", sandboxArg,
	}
	if machine == vmm.MachineMicrovm {
		// Free page reporting: the guest (the minimal kernel has the
		// driver built in) hands pages it frees back, and QEMU punches
		// them out of the memfd, so an idle guest stops holding what a
		// workload once used.
		args = append(args, "-device", dev.balloon+",free-page-reporting=on")
		// QEMU 7.2's virtio-mmio defaults to the legacy (version 1)
		// interface, on which the guest's channel stalls after the first
		// message; modern virtio-mmio works.
		args = append(args, "-global", "virtio-mmio.force-legacy=false")
	}
	switch cfg.Accelerator {
	case vmm.AccelKVM:
		args = append(args, "-accel", "kvm", "-cpu", "host")
	case vmm.AccelTCG:
		// Multi-threaded TCG uses a host thread per vCPU. The translation
		// cache defaults to 1 GiB of reserved memory, touched as it fills:
		// a boot and a small workload fill ~40 MiB; 64 MiB caps what a
		// busy guest costs the host without slowing the start (32 MiB
		// overflows during boot: retranslation made it ~0.4 s slower).
		//
		// ERMS/FSRM off: with them the guest kernel clears and copies
		// pages and poisons freed init memory with byte-wise rep stosb /
		// movsb, which TCG runs one byte per iteration; without them it
		// uses 8-byte strings. ~0.2 s less to boot.
		args = append(args, "-accel", "tcg,thread=multi,tb-size=64", "-cpu", tcgCPU)
	}
	for i, s := range cfg.Shares {
		id := fmt.Sprintf("fs%d", i)
		args = append(args,
			"-chardev", "socket,id="+id+",path="+s.Socket,
			"-device", dev.fs+",chardev="+id+",tag="+s.Tag,
		)
	}
	if cfg.Incoming != "" {
		// The state is loaded over QMP (migrate-incoming), once the
		// capabilities it was saved with are set.
		args = append(args, "-incoming", "defer")
	}
	if nic := cfg.NIC; nic != nil {
		// The link is private to this VM, so a large MTU (host_mtu,
		// which the guest driver adopts) moves more data per emulated
		// packet.
		device := fmt.Sprintf("%s,netdev=net0,mac=%s", dev.net, nic.MAC)
		if nic.MTU > 0 {
			device += fmt.Sprintf(",host_mtu=%d", nic.MTU)
		}
		args = append(args,
			"-netdev", "stream,id=net0,server=off,addr.type=unix,addr.path="+nic.Socket,
			"-device", device,
		)
	}
	return args, nil
}

// consoleChardev is the serial console's chardev: a client socket to
// cfg.ConsoleSocket when set (the runtime writes the log there, with a
// cap), else QEMU's own file. A slow reader holds the guest's UART, never
// loses output.
func consoleChardev(cfg vmm.Config) string {
	if cfg.ConsoleSocket != "" {
		return "socket,id=console,path=" + cfg.ConsoleSocket + ",server=off"
	}
	return "file,id=console,path=" + cfg.ConsoleLog
}

func validate(cfg vmm.Config) error {
	switch {
	case cfg.ID == "":
		return fmt.Errorf("vm config: empty ID")
	case cfg.Kernel == "" || cfg.Initrd == "":
		return fmt.Errorf("vm config: kernel and initrd are required")
	case cfg.MemoryMiB < 64:
		return fmt.Errorf("vm config: %d MiB of memory is too little: at least 64 MiB", cfg.MemoryMiB)
	case cfg.CPUs < 1:
		return fmt.Errorf("vm config: at least one vCPU is required")
	case cfg.Accelerator != vmm.AccelKVM && cfg.Accelerator != vmm.AccelTCG:
		return fmt.Errorf("vm config: accelerator %q must be resolved to kvm or tcg", cfg.Accelerator)
	case cfg.ChannelSocket == "" || cfg.ChannelName == "" || cfg.ConsoleLog == "":
		return fmt.Errorf("vm config: channel socket, channel name and console log are required")
	case cfg.Machine != "" && cfg.Machine != vmm.MachineQ35 && cfg.Machine != vmm.MachineMicrovm:
		return fmt.Errorf("vm config: machine %q must be resolved to q35 or microvm", cfg.Machine)
	}
	for _, s := range cfg.Shares {
		// QEMU's option parser splits on commas: a tag or path with one
		// would be read as another option.
		if s.Tag == "" || strings.ContainsAny(s.Tag+s.Socket, ",") {
			return fmt.Errorf("vm config: share tag %q / socket %q must be non-empty and free of commas", s.Tag, s.Socket)
		}
	}
	paths := []string{cfg.Kernel, cfg.Initrd, cfg.ConsoleLog, cfg.ConsoleSocket, cfg.ChannelSocket, cfg.ID}
	if cfg.NIC != nil {
		if cfg.NIC.Socket == "" || len(cfg.NIC.MAC) != 6 {
			return fmt.Errorf("vm config: a NIC needs a socket and a 6-byte MAC (got %q, %q)", cfg.NIC.Socket, cfg.NIC.MAC)
		}
		paths = append(paths, cfg.NIC.Socket)
	}
	for _, p := range paths {
		if strings.Contains(p, ",") {
			return fmt.Errorf("vm config: %q contains a comma, which QEMU's option syntax cannot carry", p)
		}
	}
	return nil
}
