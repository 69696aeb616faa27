package boot

import (
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// minEntropy is the least a restored guest accepts: a full reseed of the
// kernel's ChaCha20 generator is 32 bytes.
const minEntropy = 32

// SetClock sets CLOCK_REALTIME. A guest restored from a snapshot resumes
// with the clock of the moment the snapshot was saved.
func SetClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("set the clock to %s: %w", t.UTC().Format(time.RFC3339Nano), err)
	}
	return nil
}

// AddEntropy credits data to the kernel's entropy pool and makes its random
// number generator reseed from it now: every guest restored from one
// snapshot starts with the same generator state, and must not hand out the
// same "random" bytes as its siblings.
func AddEntropy(data []byte) error {
	if len(data) < minEntropy {
		return fmt.Errorf("%d bytes of entropy: at least %d are needed for a reseed", len(data), minEntropy)
	}
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	req := make([]byte, 8+len(data))
	*(*int32)(unsafe.Pointer(&req[0])) = int32(len(data) * 8)
	*(*int32)(unsafe.Pointer(&req[4])) = int32(len(data))
	copy(req[8:], data)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
		return fmt.Errorf("RNDADDENTROPY: %w", e)
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.RNDRESEEDCRNG, 0); err != nil {
		return fmt.Errorf("RNDRESEEDCRNG: %w", err)
	}
	return nil
}
