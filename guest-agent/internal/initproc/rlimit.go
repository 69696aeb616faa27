package initproc

import (
	"fmt"

	"golang.org/x/sys/unix"
)

var rlimits = map[string]int{
	"RLIMIT_AS":         unix.RLIMIT_AS,
	"RLIMIT_CORE":       unix.RLIMIT_CORE,
	"RLIMIT_CPU":        unix.RLIMIT_CPU,
	"RLIMIT_DATA":       unix.RLIMIT_DATA,
	"RLIMIT_FSIZE":      unix.RLIMIT_FSIZE,
	"RLIMIT_LOCKS":      unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK":    unix.RLIMIT_MEMLOCK,
	"RLIMIT_MSGQUEUE":   unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE":       unix.RLIMIT_NICE,
	"RLIMIT_NOFILE":     unix.RLIMIT_NOFILE,
	"RLIMIT_NPROC":      unix.RLIMIT_NPROC,
	"RLIMIT_RSS":        unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO":     unix.RLIMIT_RTPRIO,
	"RLIMIT_RTTIME":     unix.RLIMIT_RTTIME,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK":      unix.RLIMIT_STACK,
}

// RlimitResource maps an OCI rlimit name (RLIMIT_NOFILE) to its resource
// number.
func RlimitResource(name string) (int, error) {
	r, ok := rlimits[name]
	if !ok {
		return 0, fmt.Errorf("unknown rlimit type %q", name)
	}
	return r, nil
}

// ValidateRlimits checks names and soft <= hard, so the agent can refuse a
// bad request before starting anything.
func ValidateRlimits(rl []Rlimit) error {
	for _, r := range rl {
		if _, err := RlimitResource(r.Type); err != nil {
			return err
		}
		if r.Soft > r.Hard {
			return fmt.Errorf("rlimit %s: soft limit %d exceeds hard limit %d", r.Type, r.Soft, r.Hard)
		}
	}
	return nil
}
