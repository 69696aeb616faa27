package container

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/mountutil"
)

// guestPtmx is the guest's own pty multiplexer, used when the container has
// no devpts instance of its own.
const guestPtmx = "/dev/ptmx"

// containerPtmx returns the ptmx of the container's own devpts instance
// (<rootfs>/dev/pts/ptmx), so that its ptys show up inside the container as
// /dev/pts/N, or the guest's when the container mounted no devpts.
func containerPtmx(rootfs string) string {
	pts, err := mountutil.SecureJoin(rootfs, "/dev/pts")
	if err != nil {
		return guestPtmx
	}
	var st unix.Statfs_t
	if unix.Statfs(pts, &st) != nil || st.Type != unix.DEVPTS_SUPER_MAGIC {
		return guestPtmx
	}
	// The guest's instance bound into the container is not its own.
	var guest, own unix.Stat_t
	if unix.Stat("/dev/pts", &guest) == nil && unix.Stat(pts, &own) == nil && guest.Dev == own.Dev {
		return guestPtmx
	}
	return filepath.Join(pts, "ptmx")
}

// pty is a pseudo-terminal pair for one process.
type pty struct {
	master *os.File // kept by the process: stdin writes and resizes
	reader *os.File // a dup of the master for the output copier
	slave  *os.File // the process's stdin/stdout/stderr and ctty
}

// openPty allocates a pty from ptmxPath. The slave is opened through the
// master (TIOCGPTPEER), so it belongs to the same devpts instance whatever
// the mount namespace; it is owned by uid so the process can reopen it.
func openPty(ptmxPath string, uid uint32) (_ *pty, err error) {
	mfd, err := unix.Open(ptmxPath, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", ptmxPath, err)
	}
	fds := []int{mfd}
	defer func() {
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}()
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		return nil, fmt.Errorf("unlock pty: %w", err)
	}
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(mfd), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		return nil, fmt.Errorf("open pty slave: %w", errno)
	}
	fds = append(fds, int(sfd))
	if err := unix.Fchown(int(sfd), int(uid), -1); err != nil {
		return nil, fmt.Errorf("chown pty slave to %d: %w", uid, err)
	}
	rfd, err := unix.FcntlInt(uintptr(mfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup pty master: %w", err)
	}
	fds = append(fds, rfd)
	// Non-blocking before os.NewFile: the runtime poller then serves
	// them, so deadlines work and Close interrupts blocked calls.
	for _, fd := range []int{mfd, rfd} {
		if err := unix.SetNonblock(fd, true); err != nil {
			return nil, err
		}
	}
	return &pty{
		master: os.NewFile(uintptr(mfd), "ptmx"),
		reader: os.NewFile(uintptr(rfd), "ptmx"),
		slave:  os.NewFile(sfd, "pts"),
	}, nil
}

// setWinsize sets a terminal's window size (TIOCSWINSZ).
func setWinsize(f *os.File, width, height uint32) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: clamp16(height), Col: clamp16(width)})
	}); err != nil {
		return err
	}
	return ierr
}

func clamp16(v uint32) uint16 {
	if v > 0xffff {
		return 0xffff
	}
	return uint16(v)
}
