// Package boot does what PID 1 must do before it can serve the host: make
// its root a mount point containers can pivot_root away from, mount the
// pseudo file systems, point stdio at the console, load kernel modules,
// enable cgroup v2 controllers and bring the loopback interface up.
package boot

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agentlog"
)

// DefaultPath is the PATH of the agent and the fallback for processes
// whose environment has none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ModulesLoadOrder lists absolute .ko paths, one a line, loaded in order.
const ModulesLoadOrder = "/lib/modules/load.order"

// CgroupRoot is where the cgroup v2 hierarchy is mounted.
const CgroupRoot = "/sys/fs/cgroup"

type mountPoint struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	mode                   os.FileMode
}

var baseMounts = []mountPoint{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", 0o755},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,ptmxmode=0666,gid=5", 0o755},
	{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", 0o755},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
	{"cgroup2", CgroupRoot, "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "nsdelegate", 0o555},
}

// Setup runs the PID 1 boot steps. Only a failure that leaves the agent
// unable to work is returned; the rest is logged.
func Setup() error {
	os.Setenv("PATH", DefaultPath)
	unix.Umask(0o022)
	// Without it no container can be confined to its root (see
	// MakeRootPivotable): the guest is no use without that.
	if err := MakeRootPivotable(); err != nil {
		return err
	}
	for i, m := range baseMounts {
		if err := mountOne(m); err != nil {
			// cgroup2 with nsdelegate may be refused; retry plainly.
			if m.fstype == "cgroup2" {
				m.data = ""
				if err2 := mountOne(m); err2 == nil {
					continue
				}
			}
			if i < 3 { // proc, sys, dev: nothing works without them
				return err
			}
			agentlog.Errorf("%v", err)
		}
		if m.target == "/dev" {
			setupConsole()
		}
	}
	if KernelArg(api.DebugKernelArg) {
		agentlog.SetDebug(true)
	}
	agentlog.Debugf("mounted /proc /sys /dev /dev/pts /dev/shm /run /tmp %s", CgroupRoot)
	for _, l := range [][2]string{{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"}, {"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"}} {
		_ = os.Symlink(l[0], l[1])
	}

	start := time.Now()
	n, err := LoadModules(ModulesLoadOrder)
	if err != nil {
		agentlog.Errorf("loading modules: %v", err)
	} else if n > 0 {
		agentlog.Infof("loaded %d modules in %s", n, time.Since(start).Round(time.Millisecond))
	}

	if ctrls, err := EnableControllers(CgroupRoot); err != nil {
		agentlog.Errorf("enabling cgroup controllers: %v", err)
	} else {
		agentlog.Debugf("cgroup controllers: %s", strings.Join(ctrls, " "))
	}
	if err := loopbackUp(); err != nil {
		agentlog.Warnf("bringing lo up: %v", err)
	}
	return nil
}

func mountOne(m mountPoint) error {
	if err := os.MkdirAll(m.target, m.mode); err != nil {
		return fmt.Errorf("mkdir %s: %w", m.target, err)
	}
	if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil // already mounted (e.g. devtmpfs automount)
		}
		return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
	}
	return nil
}

// setupConsole points stdin at /dev/null and stdout/stderr at the console,
// so logs and Go runtime panics reach the serial log.
func setupConsole() {
	if fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0); err == nil {
		_ = unix.Dup3(fd, 1, 0)
		_ = unix.Dup3(fd, 2, 0)
		if fd > 2 {
			unix.Close(fd)
		}
	}
	if fd, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
		_ = unix.Dup3(fd, 0, 0)
		if fd > 2 {
			unix.Close(fd)
		}
	}
}

// LoadModules loads every module listed in the file at listPath, in order.
// A missing list is not an error (all-built-in kernels have none).
func LoadModules(listPath string) (int, error) {
	b, err := os.ReadFile(listPath)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var errs []error
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		path := strings.TrimSpace(line)
		if path == "" || strings.HasPrefix(path, "#") {
			continue
		}
		if err := loadModule(path); err != nil {
			agentlog.Errorf("load module %s: %v", path, err)
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if strings.HasSuffix(path, ".xz") || strings.HasSuffix(path, ".zst") || strings.HasSuffix(path, ".gz") {
		flags |= unix.MODULE_INIT_COMPRESSED_FILE
	}
	err = unix.FinitModule(int(f.Fd()), "", flags)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// EnableControllers enables cpu, cpuset, memory, pids and io (those present) for the
// children of the cgroup at root.
func EnableControllers(root string) ([]string, error) {
	b, err := os.ReadFile(root + "/cgroup.controllers")
	if err != nil {
		return nil, err
	}
	avail := map[string]bool{}
	for _, c := range strings.Fields(string(b)) {
		avail[c] = true
	}
	var enabled []string
	var errs []error
	for _, c := range []string{"cpu", "cpuset", "memory", "pids", "io"} {
		if !avail[c] {
			continue
		}
		if err := os.WriteFile(root+"/cgroup.subtree_control", []byte("+"+c), 0); err != nil {
			errs = append(errs, fmt.Errorf("+%s: %w", c, err))
			continue
		}
		enabled = append(enabled, c)
	}
	return enabled, errors.Join(errs...)
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// UptimeMillis returns the milliseconds since the kernel started, from
// /proc/uptime.
func UptimeMillis() (uint64, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, err
	}
	return ParseUptimeMillis(string(b))
}

// ParseUptimeMillis parses the first field of /proc/uptime ("12.34 5.67").
func ParseUptimeMillis(s string) (uint64, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, fmt.Errorf("empty /proc/uptime")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc/uptime %q: %w", f[0], err)
	}
	return uint64(v*1000 + 0.5), nil
}

// KernelRelease returns uname -r.
func KernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// PowerOff syncs and ends the machine. It returns only on error.
//
// It asks for a restart, not a power-off: the minimal kernel has no ACPI,
// so a power-off would only halt the CPU and leave QEMU running until the
// host kills it. The VMM starts the guest with reboot=t and -no-reboot,
// so a restart (a triple fault) makes QEMU exit at once, on every machine.
func PowerOff() error {
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}

// HasKernelArg reports whether the kernel command line cmdline holds arg
// as one of its space-separated words.
func HasKernelArg(cmdline, arg string) bool {
	for _, f := range strings.Fields(cmdline) {
		if f == arg {
			return true
		}
	}
	return false
}

// KernelArg reports whether the kernel's command line has arg.
func KernelArg(arg string) bool {
	cmdline, err := os.ReadFile("/proc/cmdline")
	return err == nil && HasKernelArg(string(cmdline), arg)
}
