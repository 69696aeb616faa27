package container

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"

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

// mountAll makes the request's mounts under rootfs in order, except those
// bound to the container's namespaces, which it plans for the init.
func mountAll(rootfs string, mounts []*api.Mount) (*mountPlan, error) {
	plan := &mountPlan{}
	for _, mnt := range mounts {
		dest := path.Clean("/" + mnt.GetDestination())
		typ := mountutil.NormalizeType(mnt.GetType())
		opts := mountutil.ParseOptions(mnt.GetOptions())
		target, err := mountutil.SecureJoin(rootfs, dest)
		if err != nil {
			return nil, fmt.Errorf("mount %s: resolve destination: %w", dest, err)
		}
		src := mnt.GetSource()
		if src == "" {
			src = typ
		}
		switch {
		case nsBound(typ):
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
		case typ == "bind" || opts.Flags&unix.MS_BIND != 0:
			if err := bindMount(src, target, opts); err != nil {
				return nil, fmt.Errorf("bind mount %s on %s: %w", src, dest, err)
			}
		case typ == "":
			return nil, fmt.Errorf("mount on %s: no type", dest)
		case typ == "virtiofs":
			if err := os.MkdirAll(target, 0o755); err != nil {
				return nil, fmt.Errorf("mount virtio-fs share %q on %s: create mount point: %w", src, dest, err)
			}
			if err := mountVirtiofs(src, target, opts.Flags, opts.Data); err != nil {
				return nil, fmt.Errorf("mount virtio-fs share %q on %s: %w", src, dest, err)
			}
		default:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return nil, fmt.Errorf("mount %s on %s: create mount point: %w", typ, dest, err)
			}
			if err := unix.Mount(src, target, typ, opts.Flags, opts.Data); err != nil {
				return nil, fmt.Errorf("mount %s on %s (options %q): %w", typ, dest, opts.Data, err)
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
	return nil
}

func ensureMountPoint(target string, dir bool) error {
	if dir {
		return os.MkdirAll(target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

type devNode struct {
	name         string
	major, minor uint32
}

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

// setupDev gives the container the usual device nodes, links and /dev/shm:
// made fresh on a /dev tmpfs the spec mounted, bound from the guest's /dev
// otherwise. Failures are logged: a read-only image without /dev still runs.
func setupDev(rootfs string, plan *mountPlan) {
	dev, err := mountutil.SecureJoin(rootfs, "/dev")
	if err == nil {
		err = os.MkdirAll(dev, 0o755)
	}
	if err != nil {
		agentlog.Warnf("container /dev: %v", err)
		return
	}
	for _, d := range devNodes {
		p := filepath.Join(dev, d.name)
		if plan.devTmpfs {
			err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor)))
			if err == nil {
				err = os.Chmod(p, 0o666)
			}
			if err != nil && !errors.Is(err, unix.EEXIST) {
				agentlog.Warnf("mknod %s: %v", p, err)
			}
			continue
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == unix.Mkdev(d.major, d.minor) {
			continue
		}
		if err := ensureMountPoint(p, false); err != nil {
			agentlog.Warnf("container /dev/%s: %v", d.name, err)
			continue
		}
		if err := unix.Mount("/dev/"+d.name, p, "", unix.MS_BIND, ""); err != nil {
			agentlog.Warnf("bind /dev/%s: %v", d.name, err)
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
