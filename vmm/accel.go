package vmm

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// kvmGetAPIVersion is KVM_GET_API_VERSION (_IO(KVMIO, 0x00)); the stable API
// answers 12.
const (
	kvmGetAPIVersion = 0xAE00
	kvmAPIVersion    = 12
)

// DetectAccelerator resolves AccelAuto: KVM only when /dev/kvm opens, speaks
// the stable API and the CPU advertises vmx or svm. Nested setups can expose
// /dev/kvm without those flags, and a guest started there hangs, so the
// flags are required. The reason explains the choice for the logs.
func DetectAccelerator(want Accelerator) (Accelerator, string, error) {
	switch want {
	case AccelKVM, AccelTCG:
		return want, "set in the runtime config", nil
	case AccelAuto, "":
	default:
		return "", "", fmt.Errorf("accelerator %q is not valid: use auto, kvm or tcg", want)
	}
	if reason := kvmUnusable(); reason != "" {
		return AccelTCG, reason, nil
	}
	return AccelKVM, "/dev/kvm is usable and the CPU has hardware virtualization", nil
}

func kvmUnusable() string {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Sprintf("/dev/kvm cannot be opened (%v)", err)
	}
	defer f.Close()
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil || v != kvmAPIVersion {
		return fmt.Sprintf("/dev/kvm answers API version %d (%v), want %d", v, err, kvmAPIVersion)
	}
	cpuinfo, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return fmt.Sprintf("cannot read /proc/cpuinfo: %v", err)
	}
	defer cpuinfo.Close()
	if !hasVirtFlag(cpuinfo) {
		return "the CPU advertises neither vmx nor svm (nested virtualization is off)"
	}
	return ""
}

// hasVirtFlag reports whether a /proc/cpuinfo listing has vmx or svm.
func hasVirtFlag(r io.Reader) bool {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, f := range strings.Fields(val) {
			if f == "vmx" || f == "svm" {
				return true
			}
		}
	}
	return false
}
