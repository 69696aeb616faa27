// Package imagebuild builds the gondolin guest, two kernels with an
// initramfs each, and a manifest.json with the checksum of every input and
// output:
//
//   - vmlinuz + initrd.img, the default: a minimal kernel built from Debian's
//     linux-source package with the fragment in images/kernel (everything
//     built in, an uncompressed ELF image QEMU boots through its PVH entry
//     point, made for the microvm machine), and an initramfs with the agent
//     alone (load.order empty);
//   - vmlinuz-stock + initrd-stock.img, the fallback: Debian's cloud kernel
//     (a bzImage, booted on q35) and an initramfs with the agent and the
//     kernel modules it needs.
//
// # Initramfs contract with the guest agent
//
// The initramfs is an uncompressed newc cpio archive (see InitrdCompression)
// containing:
//
//	/init                    the agent binary (InitPath), mode 0755, static
//	/dev/console             character device 5:1, so PID 1 has stdio
//	/dev /proc /sys /run /tmp /root /mnt    empty directories, nothing mounted
//	/lib/modules/<name>.ko   uncompressed kernel modules (ModulesDir)
//	/lib/modules/load.order  the load order (LoadOrderPath)
//
// load.order is plain text: one absolute path per line, each line ending in
// "\n", no blank lines and no comments, dependencies before the modules that
// need them. The agent loads each file in order with finit_module(fd, "", 0)
// and treats EEXIST as success (the module is already loaded or built in).
// Any other error is a real failure. Modules the kernel has built in are not
// listed. The file is always present; it is empty if nothing is modular.
//
// Nothing is mounted for the agent: it mounts devtmpfs on /dev, proc, sysfs
// and so on itself, loads the modules (virtio transports first, so devices
// appear when their drivers load), then looks for its devices.
package imagebuild

const (
	// InitPath is where the agent binary is placed; the kernel runs it as PID 1.
	InitPath = "/init"
	// ModulesDir holds the modules, each as <name>.ko with the kernel's module
	// name (underscores, e.g. virtio_rng.ko for drivers/char/hw_random/virtio-rng.ko).
	ModulesDir = "/lib/modules"
	// LoadOrderPath lists the module files to load, in order; see the package doc.
	LoadOrderPath = "/lib/modules/load.order"
)

// InitrdCompression documents that initrd.img is not compressed: under QEMU
// TCG emulation the kernel's gunzip/unxz of a multi-megabyte initramfs costs
// far more boot time than reading the extra bytes, and the file is local.
const InitrdCompression = "none"

// Output file names inside --out.
const (
	KernelFile       = "vmlinuz"          // the minimal kernel (default)
	InitrdFile       = "initrd.img"       // its initramfs: the agent, no modules
	KernelStockFile  = "vmlinuz-stock"    // Debian's cloud kernel (fallback)
	InitrdStockFile  = "initrd-stock.img" // its initramfs: the agent and modules
	KernelConfigFile = "config-minimal"   // the minimal kernel's complete .config
	ManifestFile     = "manifest.json"
)
