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

// Args builds QEMU's command line for cfg. QMPSocket is the monitor socket.
func Args(cfg vmm.Config, qmpSocket string) ([]string, error) {
	if err := validate(cfg); err != nil {
		return nil, err
	}
	mem := fmt.Sprintf("%dM", cfg.MemoryMiB)
	args := []string{
		"-name", "gondolin-" + cfg.ID + ",debug-threads=on",
		"-machine", "q35,memory-backend=mem",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-m", mem,
		"-smp", fmt.Sprint(cfg.CPUs),
		// virtio-fs needs guest memory the file server can map: shared memfd.
		"-object", "memory-backend-memfd,id=mem,size=" + mem + ",share=on",
		"-kernel", cfg.Kernel,
		"-initrd", cfg.Initrd,
		"-append", strings.Join(append(append([]string{}, baseKernelArgs...), cfg.KernelArgs...), " "),
		"-chardev", "file,id=console,path=" + cfg.ConsoleLog,
		"-serial", "chardev:console",
		"-device", "virtio-serial-pci,id=ser0",
		"-chardev", "socket,id=channel,path=" + cfg.ChannelSocket + ",server=on,wait=off",
		"-device", "virtserialport,bus=ser0.0,chardev=channel,name=" + cfg.ChannelName,
		"-device", "virtio-rng-pci",
		"-qmp", "unix:" + qmpSocket + ",server=on,wait=off",
	}
	switch cfg.Accelerator {
	case vmm.AccelKVM:
		args = append(args, "-accel", "kvm", "-cpu", "host")
	case vmm.AccelTCG:
		// Multi-threaded TCG uses a host thread per vCPU. The translation
		// cache defaults to 1 GiB of reserved memory; 256 MiB is plenty
		// for one container's working set.
		args = append(args, "-accel", "tcg,thread=multi,tb-size=256", "-cpu", "max")
	}
	for i, s := range cfg.Shares {
		id := fmt.Sprintf("fs%d", i)
		args = append(args,
			"-chardev", "socket,id="+id+",path="+s.Socket,
			"-device", "vhost-user-fs-pci,chardev="+id+",tag="+s.Tag,
		)
	}
	return args, nil
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
	}
	for _, s := range cfg.Shares {
		// QEMU's option parser splits on commas: a tag or path with one
		// would be read as another option.
		if s.Tag == "" || strings.ContainsAny(s.Tag+s.Socket, ",") {
			return fmt.Errorf("vm config: share tag %q / socket %q must be non-empty and free of commas", s.Tag, s.Socket)
		}
	}
	for _, p := range []string{cfg.Kernel, cfg.Initrd, cfg.ConsoleLog, cfg.ChannelSocket, cfg.ID} {
		if strings.Contains(p, ",") {
			return fmt.Errorf("vm config: %q contains a comma, which QEMU's option syntax cannot carry", p)
		}
	}
	return nil
}
