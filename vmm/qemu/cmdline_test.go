package qemu

import (
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/earendil-works/gondolin-containerd/vmm"
)

func testConfig() vmm.Config {
	return vmm.Config{
		ID: "c1", StateDir: "/run/g/x", Kernel: "/k", Initrd: "/i",
		MemoryMiB: 512, CPUs: 2, Accelerator: vmm.AccelTCG,
		ConsoleLog: "/b/console.log", ChannelSocket: "/run/g/x/ch.sock", ChannelName: "io.gondolin.channel",
		Shares:     []vmm.Share{{Tag: "rootfs", Socket: "/run/g/x/fs0.sock"}},
		KernelArgs: []string{"gondolin.debug=1"},
	}
}

func argAfter(args []string, flag string) []string {
	var vals []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			vals = append(vals, args[i+1])
		}
	}
	return vals
}

func TestArgsTCG(t *testing.T) {
	args, err := Args(testConfig(), "/run/g/x/qmp.sock")
	if err != nil {
		t.Fatal(err)
	}
	if got := argAfter(args, "-accel"); len(got) != 1 || got[0] != "tcg,thread=multi,tb-size=64" {
		t.Errorf("-accel = %v, want tcg", got)
	}
	if got := argAfter(args, "-cpu"); len(got) != 1 || got[0] != "max,-erms,-fsrm" {
		t.Errorf("-cpu = %v, want max,-erms,-fsrm", got)
	}
	if got := argAfter(args, "-m"); got[0] != "512M" {
		t.Errorf("-m = %v", got)
	}
	if got := argAfter(args, "-smp"); got[0] != "2" {
		t.Errorf("-smp = %v", got)
	}
	if got := argAfter(args, "-object"); got[0] != "memory-backend-memfd,id=mem,size=512M,share=on" {
		t.Errorf("-object = %v", got)
	}
	appendArg := argAfter(args, "-append")[0]
	if !strings.HasPrefix(appendArg, "console=ttyS0") || !strings.HasSuffix(appendArg, " gondolin.debug=1") {
		t.Errorf("-append = %q", appendArg)
	}
	devices := strings.Join(argAfter(args, "-device"), " ")
	for _, want := range []string{"virtio-serial-pci,id=ser0,max_ports=2", "virtserialport,bus=ser0.0,chardev=channel,name=io.gondolin.channel,id=channel0", "vhost-user-fs-pci,chardev=fs0,tag=rootfs"} {
		if !strings.Contains(devices, want) {
			t.Errorf("devices %q lack %q", devices, want)
		}
	}
	chardevs := strings.Join(argAfter(args, "-chardev"), " ")
	if !strings.Contains(chardevs, "socket,id=fs0,path=/run/g/x/fs0.sock") || !strings.Contains(chardevs, "file,id=console,path=/b/console.log") {
		t.Errorf("chardevs = %q", chardevs)
	}
}

// With a console socket QEMU connects to the runtime's listener (which caps
// the log) instead of writing the log file itself.
func TestArgsConsoleSocket(t *testing.T) {
	cfg := testConfig()
	cfg.ConsoleSocket = "/run/g/x/console.sock"
	args, err := Args(cfg, "/q")
	if err != nil {
		t.Fatal(err)
	}
	chardevs := argAfter(args, "-chardev")
	if !slices.Contains(chardevs, "socket,id=console,path=/run/g/x/console.sock,server=off") {
		t.Errorf("chardevs = %q, want the console on the socket", chardevs)
	}
	for _, c := range chardevs {
		if strings.HasPrefix(c, "file,") {
			t.Errorf("chardev %q: QEMU must not write the console log itself", c)
		}
	}
	cfg.ConsoleSocket = "/run/g/x,y/console.sock"
	if _, err := Args(cfg, "/q"); err == nil {
		t.Error("a console socket path with a comma was accepted")
	}
}

func TestArgsKVM(t *testing.T) {
	cfg := testConfig()
	cfg.Accelerator = vmm.AccelKVM
	args, err := Args(cfg, "/q")
	if err != nil {
		t.Fatal(err)
	}
	if got := argAfter(args, "-cpu"); got[0] != "host" {
		t.Errorf("-cpu = %v, want host", got)
	}
}

func TestArgsRejects(t *testing.T) {
	for name, mutate := range map[string]func(*vmm.Config){
		"auto accel":      func(c *vmm.Config) { c.Accelerator = vmm.AccelAuto },
		"tiny memory":     func(c *vmm.Config) { c.MemoryMiB = 16 },
		"no cpus":         func(c *vmm.Config) { c.CPUs = 0 },
		"comma in kernel": func(c *vmm.Config) { c.Kernel = "/a,b" },
		"comma in tag":    func(c *vmm.Config) { c.Shares[0].Tag = "a,b" },
		"no initrd":       func(c *vmm.Config) { c.Initrd = "" },
	} {
		cfg := testConfig()
		mutate(&cfg)
		if _, err := Args(cfg, "/q"); err == nil {
			t.Errorf("%s: Args accepted a bad config", name)
		}
	}
}

func TestArgsMicrovm(t *testing.T) {
	hostTSCKHz = func() uint64 { return 2596144 }
	defer func() { hostTSCKHz = vmm.HostTSCKHz }()
	cfg := testConfig()
	cfg.Machine = vmm.MachineMicrovm
	args, err := Args(cfg, "/q")
	if err != nil {
		t.Fatal(err)
	}
	if got := argAfter(args, "-machine")[0]; !strings.HasPrefix(got, "microvm,") || !strings.Contains(got, "acpi=off") || !strings.Contains(got, "pit=on,pic=on") || !strings.HasSuffix(got, ",memory-backend=mem") {
		t.Errorf("-machine = %q", got)
	}
	if g := argAfter(args, "-global"); len(g) != 1 || g[0] != "virtio-mmio.force-legacy=false" {
		t.Errorf("-global = %v", g)
	}
	devices := strings.Join(argAfter(args, "-device"), " ")
	if strings.Contains(devices, "-pci") || !strings.Contains(devices, "vhost-user-fs-device,chardev=fs0,tag=rootfs") ||
		!strings.Contains(devices, "virtio-serial-device,id=ser0,max_ports=2") || !strings.Contains(devices, "virtio-rng-device") ||
		!strings.Contains(devices, "virtio-balloon-device,free-page-reporting=on") {
		t.Errorf("microvm devices = %q", devices)
	}
	appendArg := argAfter(args, "-append")[0]
	if !strings.Contains(appendArg, " virtio_mmio.max_queue_size=256 page_reporting.page_reporting_order=5 tsc_early_khz=2596144 ") || strings.Contains(appendArg, "noapictimer") || strings.Contains(appendArg, "noreplace-smp") || !strings.Contains(appendArg, " init_on_alloc=1 ") || !strings.HasSuffix(appendArg, " gondolin.debug=1") {
		t.Errorf("-append (2 vCPUs) = %q", appendArg)
	}
	cfg.CPUs = 1
	args, _ = Args(cfg, "/q")
	if a := argAfter(args, "-append")[0]; !strings.Contains(a, " init_on_alloc=1 noreplace-smp virtio_mmio.max_queue_size=256 page_reporting.page_reporting_order=5 tsc_early_khz=2596144 noapictimer ") {
		t.Errorf("-append (1 vCPU) = %q", a)
	}
	// KVM has kvmclock and a TSC-deadline timer: no TCG workarounds.
	cfg.Accelerator = vmm.AccelKVM
	args, _ = Args(cfg, "/q")
	if a := argAfter(args, "-append")[0]; strings.Contains(a, "tsc_early_khz") || strings.Contains(a, "noapictimer") || strings.Contains(a, "noreplace-smp") || strings.Contains(a, "init_on_alloc") || !strings.Contains(a, " virtio_mmio.max_queue_size=256") {
		t.Errorf("KVM -append = %q", a)
	}
	// q35 (the default) keeps PCI devices and no TCG timer arguments.
	cfg = testConfig()
	args, _ = Args(cfg, "/q")
	if got := argAfter(args, "-machine")[0]; got != "q35,memory-backend=mem" {
		t.Errorf("q35 -machine = %q", got)
	}
	if a := argAfter(args, "-append")[0]; strings.Contains(a, "noapictimer") || strings.Contains(a, "virtio_mmio") {
		t.Errorf("q35 -append = %q", a)
	}
	cfg.Machine = "virt"
	if _, err := Args(cfg, "/q"); err == nil {
		t.Error("unknown machine accepted")
	}
}

func TestArgsNIC(t *testing.T) {
	cfg := testConfig()
	if args, _ := Args(cfg, "/q"); len(argAfter(args, "-netdev")) != 0 {
		t.Fatalf("no NIC asked for, got -netdev %v", argAfter(args, "-netdev"))
	}
	cfg.NIC = &vmm.NIC{Socket: "/run/g/x/net.sock", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, MTU: 65000}
	for machine, device := range map[vmm.Machine]string{vmm.MachineQ35: "virtio-net-pci", vmm.MachineMicrovm: "virtio-net-device"} {
		cfg.Machine = machine
		args, err := Args(cfg, "/q")
		if err != nil {
			t.Fatal(err)
		}
		if got := argAfter(args, "-netdev"); len(got) != 1 || got[0] != "stream,id=net0,server=off,addr.type=unix,addr.path=/run/g/x/net.sock" {
			t.Errorf("%s: -netdev = %v", machine, got)
		}
		want := device + ",netdev=net0,mac=02:00:00:00:00:01,host_mtu=65000"
		if devices := argAfter(args, "-device"); !slices.Contains(devices, want) {
			t.Errorf("%s: devices %v lack %q", machine, devices, want)
		}
	}
	cfg.NIC.MAC = nil
	if _, err := Args(cfg, "/q"); err == nil || !strings.Contains(err.Error(), "MAC") {
		t.Errorf("NIC without MAC: %v", err)
	}
}

// QEMU always runs under its seccomp filter with every optional deny.
func TestArgsSandbox(t *testing.T) {
	args, err := Args(vmm.Config{ID: "x", Kernel: "/k", Initrd: "/i", MemoryMiB: 256, CPUs: 1, Accelerator: vmm.AccelTCG,
		ConsoleLog: "/c", ChannelSocket: "/s", ChannelName: "n"}, "/q")
	if err != nil {
		t.Fatal(err)
	}
	i := slices.Index(args, "-sandbox")
	if i < 0 || args[i+1] != "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny" {
		t.Fatalf("QEMU args lack the seccomp sandbox: %q", args)
	}
}
