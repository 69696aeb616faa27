package container

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/mountutil"
)

// defaultPodShmSize is the pod shm tmpfs's size when the first mount gives
// none: Docker's and containerd's default /dev/shm size.
const defaultPodShmSize = "64m"

// podShmFlags are the per-mount flags a pod shm mount may carry; the bind
// is nosuid, nodev and noexec whatever they say (the tmpfs's own).
const podShmFlags = unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC |
	unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME | unix.MS_STRICTATIME

// podShmSize checks a pod shm mount and returns the size it asks for ("" for
// none).
func podShmSize(mnt *api.Mount, opts mountutil.Options) (string, error) {
	accepted := "accepted are size=<tmpfs size>, ro, rw, nosuid, nodev, noexec, bind, rbind, atime flags and propagation"
	if mnt.GetSource() != "" {
		return "", fmt.Errorf("%s mount on %s: source %q must be empty", api.PodShmMountType, mnt.GetDestination(), mnt.GetSource())
	}
	for _, o := range mnt.GetOptions() {
		if o == "suid" || o == "dev" || o == "exec" {
			return "", fmt.Errorf("%s mount on %s: option %q: the pod's /dev/shm is always nosuid, nodev and noexec", api.PodShmMountType, mnt.GetDestination(), o)
		}
	}
	if extra := opts.Flags &^ podShmFlags; extra != 0 {
		return "", fmt.Errorf("%s mount on %s: options %q set mount flags %#x: %s", api.PodShmMountType, mnt.GetDestination(), mnt.GetOptions(), extra, accepted)
	}
	size := ""
	for _, d := range strings.Split(opts.Data, ",") {
		if d == "" {
			continue
		}
		v, ok := strings.CutPrefix(d, "size=")
		if !ok {
			return "", fmt.Errorf("%s mount on %s: option %q: %s", api.PodShmMountType, mnt.GetDestination(), d, accepted)
		}
		if _, _, err := parseTmpfsSize(v); err != nil {
			return "", fmt.Errorf("%s mount on %s: %w", api.PodShmMountType, mnt.GetDestination(), err)
		}
		size = v
	}
	return size, nil
}

// parseTmpfsSize parses a tmpfs size= value: bytes, or with a k, m, g or t
// suffix (powers of 1024), or a percentage of the guest's memory. Zero,
// which tmpfs takes for unlimited, is refused.
func parseTmpfsSize(v string) (n uint64, percent bool, err error) {
	num, mult := v, uint64(1)
	if v != "" {
		switch v[len(v)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		case '%':
			percent = true
		}
		if mult != 1 || percent {
			num = v[:len(v)-1]
		}
	}
	n, perr := strconv.ParseUint(num, 10, 64)
	switch {
	case perr != nil || num == "" || num[0] == '+':
		return 0, false, fmt.Errorf("size=%s: accepted are bytes, or a number with a k, m, g or t suffix, or a percentage of the guest's memory (64m, 50%%)", v)
	case n == 0:
		return 0, false, fmt.Errorf("size=%s: a pod's /dev/shm needs a size above 0 (tmpfs takes 0 for unlimited)", v)
	case percent && n > 100:
		return 0, false, fmt.Errorf("size=%s: a percentage of the guest's memory is at most 100%%", v)
	case n > (1<<64-1)/mult:
		return 0, false, fmt.Errorf("size=%s is too large", v)
	}
	return n * mult, percent, nil
}

// podShm is the pod's /dev/shm: one tmpfs of the guest, mounted at the
// first api.PodShmMountType mount and kept for the VM's life (a pod's
// containers come and go while the pod lives; the VM ends with it).
type podShm struct {
	dir string

	mu   sync.Mutex
	size string // as mounted; "" until then
}

// get returns the directory of the pod's shm tmpfs, mounting it with size
// (or the default) at its first use. A later size must be the same.
func (s *podShm) get(size string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.size != "" {
		if size != "" && !sameTmpfsSize(size, s.size) {
			return "", fmt.Errorf("the pod's /dev/shm is mounted with size=%s: a later %s mount may repeat that size or give none, not size=%s: %w", s.size, api.PodShmMountType, size, errdefs.ErrFailedPrecondition)
		}
		return s.dir, nil
	}
	if size == "" {
		size = defaultPodShmSize
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return "", fmt.Errorf("create the pod's /dev/shm mount point: %w", err)
	}
	if err := unix.Mount("shm", s.dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size="+size); err != nil {
		return "", fmt.Errorf("mount the pod's /dev/shm tmpfs (size=%s) on %s: %w", size, s.dir, err)
	}
	s.size = size
	return s.dir, nil
}

// sameTmpfsSize compares two sizes the way tmpfs applies them (in pages).
func sameTmpfsSize(a, b string) bool {
	na, pa, errA := parseTmpfsSize(a)
	nb, pb, errB := parseTmpfsSize(b)
	if errA != nil || errB != nil || pa != pb {
		return a == b
	}
	if pa {
		return na == nb
	}
	page := uint64(os.Getpagesize())
	return (na+page-1)/page == (nb+page-1)/page
}
