package initproc

import (
	"reflect"
	"testing"
)

// containerd's default capability set.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

func TestCapNumber(t *testing.T) {
	for name, want := range map[string]int{
		"CAP_CHOWN": 0, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21, "CAP_SETFCAP": 31,
		"CAP_CHECKPOINT_RESTORE": 40, "net_raw": 13, "cap_kill": 5, "AUDIT_WRITE": 29,
	} {
		if got, ok := CapNumber(name); !ok || got != want {
			t.Errorf("CapNumber(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
	for _, bad := range []string{"", "CAP_", "CAP_BOGUS", "NET_RAWX"} {
		if _, ok := CapNumber(bad); ok {
			t.Errorf("CapNumber(%q) accepted", bad)
		}
	}
	if len(capNames) != 41 {
		t.Errorf("%d capabilities mapped, Linux 6.1 has 41", len(capNames))
	}
	seen := map[int]string{}
	for n, c := range capNames {
		if other, dup := seen[c]; dup {
			t.Errorf("%s and %s both map to %d", n, other, c)
		}
		seen[c] = n
	}
}

func TestComputeCapSets(t *testing.T) {
	s, unknown := ComputeCapSets(CapNames{Bounding: defaultCaps, Effective: defaultCaps, Permitted: defaultCaps})
	if len(unknown) != 0 {
		t.Fatalf("unknown %v", unknown)
	}
	// What /proc/self/status shows as CapBnd under containerd's default.
	if s.Bounding != 0xa80425fb || s.Effective != 0xa80425fb || s.Permitted != 0xa80425fb {
		t.Fatalf("sets = %+v, want 0xa80425fb", s)
	}
	if s.Inheritable != 0 || s.Ambient != 0 {
		t.Fatalf("inheritable/ambient = %#x/%#x", s.Inheritable, s.Ambient)
	}

	s, unknown = ComputeCapSets(CapNames{Bounding: []string{"CAP_NET_RAW", "CAP_FUTURE", "CAP_FUTURE", "CAP_BPF"}, Ambient: []string{"CAP_BPF"}})
	if !reflect.DeepEqual(unknown, []string{"CAP_FUTURE"}) {
		t.Fatalf("unknown = %v", unknown)
	}
	if s.Bounding != 1<<13|1<<39 || s.Ambient != 1<<39 {
		t.Fatalf("sets = %+v", s)
	}
	// Absent capabilities: no capabilities at all.
	if s, _ := ComputeCapSets(CapNames{}); s != (CapSets{}) {
		t.Fatalf("empty = %+v", s)
	}
}

func TestCapSetsOperations(t *testing.T) {
	s := CapSets{Bounding: 1<<0 | 1<<13 | 1<<40, Effective: 1 << 40, Ambient: 1<<13 | 1<<40}
	if got := s.BoundingDrops(5); !reflect.DeepEqual(got, []int{1, 2, 3, 4, 5}) {
		t.Errorf("BoundingDrops(5) = %v", got)
	}
	drops := s.BoundingDrops(40)
	if len(drops) != 41-3 || drops[0] != 1 || drops[len(drops)-1] != 39 {
		t.Errorf("BoundingDrops(40) = %v", drops)
	}
	if got := s.AmbientRaises(40); !reflect.DeepEqual(got, []int{13, 40}) {
		t.Errorf("AmbientRaises = %v", got)
	}
	// An older kernel (last cap 37) cannot hear of 40.
	l := s.Limit(37)
	if l.Bounding != 1<<0|1<<13 || l.Effective != 0 || l.Ambient != 1<<13 {
		t.Errorf("Limit(37) = %+v", l)
	}
	if s.Limit(63) != s {
		t.Error("Limit(63) changed the sets")
	}
	d := CapSets{Effective: 1<<40 | 1<<1, Permitted: 1<<33 | 1, Inheritable: 1 << 32}.capData()
	if d[0].Effective != 2 || d[1].Effective != 1<<8 || d[0].Permitted != 1 || d[1].Permitted != 2 || d[1].Inheritable != 1 || d[0].Inheritable != 0 {
		t.Errorf("capData = %+v", d)
	}
}
