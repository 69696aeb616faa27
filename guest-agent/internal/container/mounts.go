package container

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agentlog"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/initproc"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/mountutil"
)

// mountPlan is what mountAll did and what it left to the container init.
type mountPlan struct {
	// nsMounts are made by the init in its namespaces, in order.
	nsMounts []initproc.Mount
	cgroupNS bool
	devTmpfs bool // the spec mounted a tmpfs on /dev
	hasShm   bool // the spec mounted /dev/shm
	hasPts   bool // the spec mounted /dev/pts
}

// nsBound reports whether a file system type must be mounted from inside
// the container's namespaces: proc shows the mounter's PID namespace,
// mqueue its IPC namespace, cgroup2 its cgroup namespace.
func nsBound(typ string) bool {
	switch typ {
	case "proc", "mqueue", "cgroup2":
		return true
	}
	return false
}

// mountSources is what a container's mounts may take from besides the
// file systems they make.
type mountSources struct {
	// A bind's source must be below sharesDir/<tag> for one of tags, the
	// shares the container holds (see bindShare).
	sharesDir string
	tags      []string
	// podShm is the pod's shm tmpfs (api.PodShmMountType).
	podShm *podShm
}

// mountKind is how mountAll makes a mount.
type mountKind int

const (
	kindNS       mountKind = iota // by the init, in its namespaces (nsBound)
	kindPodShm                    // a bind of the pod's shm tmpfs
	kindBind                      // a bind of a path in a share
	kindVirtiofs                  // a virtio-fs share
	kindOther                     // a file system of its type
)

// classifyMount returns a mount's normalised type, its options and how it
// is made.
func classifyMount(mnt *api.Mount) (string, mountutil.Options, mountKind) {
	typ := mountutil.NormalizeType(mnt.GetType())
	opts := mountutil.ParseOptions(mnt.GetOptions())
	switch {
	case nsBound(typ):
		return typ, opts, kindNS
	case typ == api.PodShmMountType:
		return typ, opts, kindPodShm
	case typ == "bind" || opts.Flags&unix.MS_BIND != 0:
		return typ, opts, kindBind
	case typ == "virtiofs":
		return typ, opts, kindVirtiofs
	}
	return typ, opts, kindOther
}

// checkMounts refuses, before anything is made, the mounts mountAll would
// refuse for what the request says (not for what it finds): bind sources
// outside the container's shares, bad pod shm options.
func checkMounts(mounts []*api.Mount, sharesDir string, tags []string) error {
	for _, mnt := range mounts {
		_, opts, kind := classifyMount(mnt)
		switch kind {
		case kindBind:
			if _, _, err := bindShare(mnt.GetSource(), sharesDir, tags); err != nil {
				return fmt.Errorf("bind mount on %s: %w", mnt.GetDestination(), err)
			}
		case kindPodShm:
			if _, err := podShmSize(mnt, opts); err != nil {
				return err
			}
		}
	}
	return nil
}

// mountAll makes the request's mounts under rootfs in order, except those
// bound to the container's namespaces, which it plans for the init. With
// nodev every mount but devpts is nodev, whatever its options say (see
// setupDev).
func mountAll(rootfs string, mounts []*api.Mount, nodev bool, ms mountSources) (*mountPlan, error) {
	plan := &mountPlan{}
	for _, mnt := range mounts {
		dest := path.Clean("/" + mnt.GetDestination())
		typ, opts, kind := classifyMount(mnt)
		if nodev && typ != "devpts" {
			opts.Flags |= unix.MS_NODEV
		}
		target, err := mountutil.SecureJoin(rootfs, dest)
		if err != nil {
			return nil, fmt.Errorf("mount %s: resolve destination: %w", dest, err)
		}
		src := mnt.GetSource()
		if src == "" {
			src = typ
		}
		switch kind {
		case kindNS:
			// The init mounts it; make the mount point now, while the
			// root may still be written.
			if err := os.MkdirAll(target, 0o755); err != nil {
				return nil, fmt.Errorf("mount %s on %s: create mount point: %w", typ, dest, err)
			}
			plan.nsMounts = append(plan.nsMounts, initproc.Mount{Source: src, Target: target, Type: typ, Flags: opts.Flags &^ (unix.MS_BIND | unix.MS_REC | unix.MS_REMOUNT), Data: opts.Data})
			if typ == "cgroup2" {
				plan.cgroupNS = true
			}
			continue
		case kindPodShm:
			size, err := podShmSize(mnt, opts)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
			}
			if ms.podShm == nil {
				return nil, fmt.Errorf("%s mount on %s: this agent has no pod /dev/shm", typ, dest)
			}
			dir, err := ms.podShm.get(size)
			if err != nil {
				return nil, err
			}
			// The tmpfs's nosuid, nodev and noexec hold for the bind too.
			opts.Flags |= unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
			if err := bindMount(dir, target, opts); err != nil {
				return nil, fmt.Errorf("bind the pod's /dev/shm on %s: %w", dest, err)
			}
		case kindBind:
			if err := bindFromShare(src, target, opts, ms); err != nil {
				return nil, fmt.Errorf("bind mount %s on %s: %w", src, dest, err)
			}
		case kindOther:
			if typ == "" {
				return nil, fmt.Errorf("mount on %s: no type", dest)
			}
			if err := os.MkdirAll(target, 0o755); err != nil {
				return nil, fmt.Errorf("mount %s on %s: create mount point: %w", typ, dest, err)
			}
			if err := unix.Mount(src, target, typ, opts.Flags, opts.Data); err != nil {
				return nil, fmt.Errorf("mount %s on %s (options %q): %w", typ, dest, opts.Data, err)
			}
		case kindVirtiofs:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return nil, fmt.Errorf("mount virtio-fs share %q on %s: create mount point: %w", src, dest, err)
			}
			if err := mountVirtiofs(src, target, opts.Flags, opts.Data); err != nil {
				return nil, fmt.Errorf("mount virtio-fs share %q on %s: %w", src, dest, err)
			}
		}
		if opts.Propagation != 0 {
			if err := unix.Mount("", target, "", opts.Propagation, ""); err != nil {
				return nil, fmt.Errorf("set propagation of %s: %w", dest, err)
			}
		}
		switch dest {
		case "/dev":
			plan.devTmpfs = typ == "tmpfs"
		case "/dev/shm":
			plan.hasShm = true
		case "/dev/pts":
			plan.hasPts = true
		}
	}
	return plan, nil
}

// perMountFlags are the mount(2) flags that belong to one mount rather
// than to the file system.
const perMountFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC |
	unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME | unix.MS_STRICTATIME

// mountVirtiofs mounts a virtio-fs share. Every mount of one tag shares a
// superblock, so read-only is applied to this mount only (a bind remount),
// never to the superblock other containers may be using read-write.
func mountVirtiofs(tag, target string, flags uintptr, data string) error {
	if err := unix.Mount(tag, target, "virtiofs", flags&^unix.MS_RDONLY, data); err != nil {
		return err
	}
	if flags&unix.MS_RDONLY != 0 {
		return remountReadonly(target, flags)
	}
	return nil
}

// remountReadonly makes one mount read-only, keeping its other flags.
func remountReadonly(target string, flags uintptr) error {
	if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|(flags&perMountFlags), ""); err != nil {
		return fmt.Errorf("remount %s read-only: %w", target, err)
	}
	return nil
}

// bindMount binds a guest path (file or directory) onto target.
func bindMount(src, target string, opts mountutil.Options) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if err := ensureMountPoint(target, fi.IsDir()); err != nil {
		return err
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND|(opts.Flags&unix.MS_REC), ""); err != nil {
		return err
	}
	if rest := opts.Flags &^ (unix.MS_BIND | unix.MS_REC); rest != 0 {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|rest, ""); err != nil {
			return fmt.Errorf("remount with flags %#x: %w", rest, err)
		}
	}
	// The remount set the top mount's flags; an rbind's submounts keep
	// their own, so nodev is set on them as well.
	if opts.Flags&(unix.MS_REC|unix.MS_NODEV) == unix.MS_REC|unix.MS_NODEV {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NODEV}
		if err := unix.MountSetattr(unix.AT_FDCWD, target, unix.AT_RECURSIVE, &attr); err != nil {
			return fmt.Errorf("make the mounts below %s nodev: %w", target, err)
		}
	}
	return nil
}

// bindDevice binds the device node src onto the container path name below
// rootfs (a file made for it): a mount of src's file system, so the node
// opens even where the mount below is nodev.
func bindDevice(src, rootfs, name string) error {
	target, err := mountutil.SecureJoin(rootfs, name)
	if err != nil {
		return err
	}
	if err := ensureMountPoint(target, false); err != nil {
		return err
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, target, err)
	}
	return nil
}

// ensureMountPoint makes target a mount point for a directory or a
// file. What is there already is never opened: the image decides what it
// is (a FIFO would block; a device node on a nodev mount does not open).
func ensureMountPoint(target string, dir bool) error {
	if dir {
		return os.MkdirAll(target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	fd, err := unix.Open(target, unix.O_CREAT|unix.O_EXCL|unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create mount point %s: %w", target, err)
	}
	return unix.Close(fd)
}

// How a container is kept from devices it was not given
//
// runc confines device access with the device cgroup (linux.resources.
// devices): a root container may mknod any node (CAP_MKNOD is in Docker's
// default set) but opens only the allowed ones. The guest has no device
// controller (cgroup v2 does it with BPF programs, which the minimal
// kernel lacks), so a node made with mknod would open whatever the guest
// kernel has: /dev/kmsg, the hardware RNG, the console (lines in the
// host's console.log), a disk. The agent confines it with the mount
// instead: every mount it makes for a container that is not allowed all
// devices (see allowsAllDevices) is nodev, which the kernel checks on the
// mount a node is opened through (may_open_dev), so a node made on the
// root, the /dev tmpfs, a tmpfs or a bind opens as EACCES. The devices the
// container is given are nodes of its own, made on a small tmpfs of the
// agent's (deviceSource, not nodev, never reachable from the container)
// and bound one by one onto files in its /dev: each bind is a mount of
// that tmpfs, not of the nodev mount below it. Being the container's own
// inodes, a chmod of them changes nothing the guest or another container
// uses. devpts stays dev, so its ptys open; it makes no nodes on request.

type devNode struct {
	name         string
	major, minor uint32
}

// devNodes are the devices every container gets: runc's default set
// (OCI's linux.devices defaults and the device cgroup's default allow
// list). /dev/ptmx is a link to the container's devpts instance. The
// spec's other linux.devices are host devices, which the guest does not
// have (oci.HostDevices).
var devNodes = []devNode{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7},
	{"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

var devLinks = [][2]string{
	{"pts/ptmx", "ptmx"},
	{"/proc/self/fd", "fd"},
	{"/proc/self/fd/0", "stdin"},
	{"/proc/self/fd/1", "stdout"},
	{"/proc/self/fd/2", "stderr"},
}

// allowsAllDevices reports whether OCI device cgroup rules let the
// container open every device, as --privileged's do ([{allow: true,
// access: rwm}]): such a container's mounts are not nodev, and a node it
// makes opens as under runc. A deny after the allow-all narrows it, and
// then nodev stays (the guest cannot enforce a partial rule). No rules at
// all is runc's default: only the default devices.
func allowsAllDevices(res *specs.LinuxResources) bool {
	if res == nil {
		return false
	}
	all := false
	for _, d := range res.Devices {
		wild := (d.Type == "" || d.Type == "a") &&
			(d.Major == nil || *d.Major == -1) && (d.Minor == nil || *d.Minor == -1)
		switch {
		case d.Allow && wild && (d.Access == "" || strings.Contains(d.Access, "r") && strings.Contains(d.Access, "w")):
			all = true
		case !d.Allow:
			all = false
		}
	}
	return all
}

// deviceSource mounts the tmpfs at dir that holds the container's device
// nodes, and makes them. It is below the container's state directory, not
// its root: nothing in the container's mount namespace reaches it but the
// binds of its nodes.
func deviceSource(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	// nosuid and noexec carry over to each bind of a node; dev must.
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=4k,nr_inodes=32"); err != nil {
		return fmt.Errorf("mount the device tmpfs on %s: %w", dir, err)
	}
	for _, d := range devNodes {
		p := filepath.Join(dir, d.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return fmt.Errorf("mknod %s: %w", p, err)
		}
		// mknod's mode went through the agent's umask.
		if err := unix.Chmod(p, 0o666); err != nil {
			return fmt.Errorf("chmod %s: %w", p, err)
		}
	}
	return nil
}

// setupDev gives the container the usual device nodes (bound from its
// device tmpfs at devices, see deviceSource), links and /dev/shm, on the
// /dev tmpfs the spec mounted or on the root's /dev. Failures are logged:
// a read-only image without /dev still runs.
func setupDev(rootfs, devices string, plan *mountPlan) {
	dev, err := mountutil.SecureJoin(rootfs, "/dev")
	if err == nil {
		err = os.MkdirAll(dev, 0o755)
	}
	if err != nil {
		agentlog.Warnf("container /dev: %v", err)
		return
	}
	if err := deviceSource(devices); err != nil {
		agentlog.Warnf("container /dev: %v", err)
	} else {
		for _, d := range devNodes {
			if err := bindDevice(filepath.Join(devices, d.name), rootfs, "/dev/"+d.name); err != nil {
				agentlog.Warnf("container /dev/%s: %v", d.name, err)
			}
		}
	}
	for _, l := range devLinks {
		p := filepath.Join(dev, l[1])
		if _, err := os.Lstat(p); err == nil {
			if !plan.devTmpfs {
				continue
			}
			_ = os.Remove(p)
		}
		if err := os.Symlink(l[0], p); err != nil {
			agentlog.Warnf("symlink %s: %v", p, err)
		}
	}
	if !plan.hasShm {
		shm := filepath.Join(dev, "shm")
		if err := os.MkdirAll(shm, 0o1777); err != nil {
			agentlog.Warnf("container /dev/shm: %v", err)
		} else if err := unix.Mount("shm", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k"); err != nil {
			agentlog.Warnf("mount /dev/shm: %v", err)
		}
	}
	if plan.devTmpfs && !plan.hasPts {
		pts := filepath.Join(dev, "pts")
		if err := os.MkdirAll(pts, 0o755); err == nil {
			if err := unix.Mount("devpts", pts, "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"); err != nil {
				agentlog.Warnf("mount /dev/pts: %v", err)
			}
		}
	}
}
