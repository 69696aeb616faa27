package initproc

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// capNames maps OCI capability names to their numbers.
var capNames = map[string]int{
	"CAP_CHOWN":              unix.CAP_CHOWN,
	"CAP_DAC_OVERRIDE":       unix.CAP_DAC_OVERRIDE,
	"CAP_DAC_READ_SEARCH":    unix.CAP_DAC_READ_SEARCH,
	"CAP_FOWNER":             unix.CAP_FOWNER,
	"CAP_FSETID":             unix.CAP_FSETID,
	"CAP_KILL":               unix.CAP_KILL,
	"CAP_SETGID":             unix.CAP_SETGID,
	"CAP_SETUID":             unix.CAP_SETUID,
	"CAP_SETPCAP":            unix.CAP_SETPCAP,
	"CAP_LINUX_IMMUTABLE":    unix.CAP_LINUX_IMMUTABLE,
	"CAP_NET_BIND_SERVICE":   unix.CAP_NET_BIND_SERVICE,
	"CAP_NET_BROADCAST":      unix.CAP_NET_BROADCAST,
	"CAP_NET_ADMIN":          unix.CAP_NET_ADMIN,
	"CAP_NET_RAW":            unix.CAP_NET_RAW,
	"CAP_IPC_LOCK":           unix.CAP_IPC_LOCK,
	"CAP_IPC_OWNER":          unix.CAP_IPC_OWNER,
	"CAP_SYS_MODULE":         unix.CAP_SYS_MODULE,
	"CAP_SYS_RAWIO":          unix.CAP_SYS_RAWIO,
	"CAP_SYS_CHROOT":         unix.CAP_SYS_CHROOT,
	"CAP_SYS_PTRACE":         unix.CAP_SYS_PTRACE,
	"CAP_SYS_PACCT":          unix.CAP_SYS_PACCT,
	"CAP_SYS_ADMIN":          unix.CAP_SYS_ADMIN,
	"CAP_SYS_BOOT":           unix.CAP_SYS_BOOT,
	"CAP_SYS_NICE":           unix.CAP_SYS_NICE,
	"CAP_SYS_RESOURCE":       unix.CAP_SYS_RESOURCE,
	"CAP_SYS_TIME":           unix.CAP_SYS_TIME,
	"CAP_SYS_TTY_CONFIG":     unix.CAP_SYS_TTY_CONFIG,
	"CAP_MKNOD":              unix.CAP_MKNOD,
	"CAP_LEASE":              unix.CAP_LEASE,
	"CAP_AUDIT_WRITE":        unix.CAP_AUDIT_WRITE,
	"CAP_AUDIT_CONTROL":      unix.CAP_AUDIT_CONTROL,
	"CAP_SETFCAP":            unix.CAP_SETFCAP,
	"CAP_MAC_OVERRIDE":       unix.CAP_MAC_OVERRIDE,
	"CAP_MAC_ADMIN":          unix.CAP_MAC_ADMIN,
	"CAP_SYSLOG":             unix.CAP_SYSLOG,
	"CAP_WAKE_ALARM":         unix.CAP_WAKE_ALARM,
	"CAP_BLOCK_SUSPEND":      unix.CAP_BLOCK_SUSPEND,
	"CAP_AUDIT_READ":         unix.CAP_AUDIT_READ,
	"CAP_PERFMON":            unix.CAP_PERFMON,
	"CAP_BPF":                unix.CAP_BPF,
	"CAP_CHECKPOINT_RESTORE": unix.CAP_CHECKPOINT_RESTORE,
}

// CapNumber maps an OCI capability name (CAP_NET_RAW; the CAP_ prefix and
// case are optional) to its number.
func CapNumber(name string) (int, bool) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	c, ok := capNames[n]
	return c, ok
}

// CapSets are the capability sets of a process as bit masks (bit n is
// capability n).
type CapSets struct {
	Bounding    uint64 `json:"bounding"`
	Effective   uint64 `json:"effective"`
	Permitted   uint64 `json:"permitted"`
	Inheritable uint64 `json:"inheritable"`
	Ambient     uint64 `json:"ambient"`
}

// CapNames are the capability sets by OCI name, as in the API.
type CapNames struct {
	Bounding, Effective, Permitted, Inheritable, Ambient []string
}

// ComputeCapSets turns names into masks. Names this agent does not know are
// skipped and returned (runc warns about them and goes on), so a newer
// engine's default set still starts.
func ComputeCapSets(n CapNames) (CapSets, []string) {
	var unknown []string
	seen := map[string]bool{}
	mask := func(names []string) uint64 {
		var m uint64
		for _, name := range names {
			c, ok := CapNumber(name)
			if !ok {
				if !seen[name] {
					seen[name] = true
					unknown = append(unknown, name)
				}
				continue
			}
			m |= 1 << uint(c)
		}
		return m
	}
	s := CapSets{
		Bounding:    mask(n.Bounding),
		Effective:   mask(n.Effective),
		Permitted:   mask(n.Permitted),
		Inheritable: mask(n.Inheritable),
		Ambient:     mask(n.Ambient),
	}
	sort.Strings(unknown)
	return s, unknown
}

// Limit drops capabilities above the kernel's last one.
func (s CapSets) Limit(lastCap int) CapSets {
	if lastCap >= 63 || lastCap < 0 {
		return s
	}
	m := uint64(1)<<uint(lastCap+1) - 1
	return CapSets{s.Bounding & m, s.Effective & m, s.Permitted & m, s.Inheritable & m, s.Ambient & m}
}

// BoundingDrops lists the capabilities (0..lastCap) to drop from the
// bounding set.
func (s CapSets) BoundingDrops(lastCap int) []int {
	var drops []int
	for c := 0; c <= lastCap; c++ {
		if s.Bounding&(1<<uint(c)) == 0 {
			drops = append(drops, c)
		}
	}
	return drops
}

// AmbientRaises lists the ambient capabilities to raise.
func (s CapSets) AmbientRaises(lastCap int) []int {
	var raise []int
	for c := 0; c <= lastCap; c++ {
		if s.Ambient&(1<<uint(c)) != 0 {
			raise = append(raise, c)
		}
	}
	return raise
}

// capData splits the sets into the two 32-bit words capset(2) takes.
func (s CapSets) capData() [2]unix.CapUserData {
	return [2]unix.CapUserData{
		{Effective: uint32(s.Effective), Permitted: uint32(s.Permitted), Inheritable: uint32(s.Inheritable)},
		{Effective: uint32(s.Effective >> 32), Permitted: uint32(s.Permitted >> 32), Inheritable: uint32(s.Inheritable >> 32)},
	}
}

// LastCap reads the kernel's highest capability number.
func LastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			return n
		}
	}
	return unix.CAP_LAST_CAP
}

// dropBounding removes capabilities from the calling thread's bounding set
// (it needs CAP_SETPCAP, so it runs before the user changes).
func dropBounding(s CapSets, lastCap int) error {
	for _, c := range s.BoundingDrops(lastCap) {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	return nil
}

// applyCaps sets the calling thread's effective, permitted and inheritable
// sets, then its ambient set. The thread's user has already changed (with
// PR_SET_KEEPCAPS, so its permitted set survived).
func applyCaps(s CapSets, lastCap int) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := s.capData()
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset (effective %#x permitted %#x inheritable %#x): %w", s.Effective, s.Permitted, s.Inheritable, err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	for _, c := range s.AmbientRaises(lastCap) {
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c), 0, 0); err != nil {
			return fmt.Errorf("raise ambient capability %d (it must be permitted and inheritable too): %w", c, err)
		}
	}
	return nil
}
