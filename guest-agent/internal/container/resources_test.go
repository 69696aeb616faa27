package container

import (
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func i64(v int64) *int64   { return &v }
func u64(v uint64) *uint64 { return &v }

func TestCgroupResources(t *testing.T) {
	r, err := CgroupResources(&specs.LinuxResources{
		Memory:  &specs.LinuxMemory{Limit: i64(256 << 20), Swap: i64(512 << 20), Reservation: i64(64 << 20)},
		CPU:     &specs.LinuxCPU{Shares: u64(1024), Quota: i64(50000), Period: u64(100000), Cpus: "0", Mems: "0"},
		Pids:    &specs.LinuxPids{Limit: i64(100)},
		BlockIO: &specs.LinuxBlockIO{Weight: func() *uint16 { v := uint16(500); return &v }()},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"memory.max":      "268435456",
		"memory.swap.max": "268435456", // OCI swap is memory+swap
		"memory.low":      "67108864",
		"cpu.weight":      "100", // shares 1024 = the default weight
		"cpu.max":         "50000 100000",
		"cpuset.cpus":     "0",
		"cpuset.mems":     "0",
		"pids.max":        "100",
	}
	checkValues(t, r, want)
	if r.IO != nil {
		t.Error("block I/O is not applied in the guest")
	}
}

func TestCgroupResourcesSpecialValues(t *testing.T) {
	cases := []struct {
		name string
		in   specs.LinuxResources
		want map[string]string
	}{
		{"unlimited memory and swap", specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(-1)}},
			map[string]string{"memory.max": "9223372036854775807", "memory.swap.max": "9223372036854775807"}},
		{"no swap", specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(32 << 20), Swap: i64(32 << 20)}},
			map[string]string{"memory.max": "33554432", "memory.swap.max": "0"}},
		{"unlimited swap", specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(32 << 20), Swap: i64(-1)}},
			map[string]string{"memory.max": "33554432", "memory.swap.max": "9223372036854775807"}},
		{"quota without period", specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(20000)}},
			map[string]string{"cpu.max": "20000 100000"}},
		{"no quota", specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(-1), Period: u64(50000)}},
			map[string]string{"cpu.max": "max 50000"}},
		{"zero shares unset", specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(0)}}, map[string]string{}},
		{"shares", specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(2)}}, map[string]string{"cpu.weight": "1"}},
		{"unlimited pids", specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(-1)}}, map[string]string{"pids.max": "max"}},
		{"empty", specs.LinuxResources{}, map[string]string{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := CgroupResources(&c.in)
			if err != nil {
				t.Fatal(err)
			}
			checkValues(t, r, c.want)
		})
	}
	for _, bad := range []specs.LinuxResources{
		{Memory: &specs.LinuxMemory{Swap: i64(64 << 20)}},                       // swap without memory
		{Memory: &specs.LinuxMemory{Limit: i64(64 << 20), Swap: i64(32 << 20)}}, // memory+swap < memory
		{Memory: &specs.LinuxMemory{Limit: i64(-5)}},
	} {
		if _, err := CgroupResources(&bad); err == nil {
			t.Errorf("%+v accepted", bad.Memory)
		}
	}
}

// checkValues compares the files a Resources would write.
func checkValues(t *testing.T, r *cgroup2.Resources, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	if r.Memory != nil {
		for f, v := range map[string]*int64{"memory.max": r.Memory.Max, "memory.swap.max": r.Memory.Swap, "memory.low": r.Memory.Low} {
			if v != nil {
				got[f] = formatInt(*v)
			}
		}
	}
	if r.CPU != nil {
		if r.CPU.Weight != nil {
			got["cpu.weight"] = formatInt(int64(*r.CPU.Weight))
		}
		if r.CPU.Max != "" {
			got["cpu.max"] = string(r.CPU.Max)
		}
		if r.CPU.Cpus != "" {
			got["cpuset.cpus"] = r.CPU.Cpus
		}
		if r.CPU.Mems != "" {
			got["cpuset.mems"] = r.CPU.Mems
		}
	}
	if r.Pids != nil && len(r.Pids.Values()) > 0 {
		got["pids.max"] = pidsMax(r.Pids.Max)
	}
	if len(got) != len(want) {
		t.Errorf("values %v, want %v", got, want)
	}
	for f, v := range want {
		if got[f] != v {
			t.Errorf("%s = %q, want %q", f, got[f], v)
		}
	}
}

func formatInt(v int64) string { return strconv.FormatInt(v, 10) }

func pidsMax(v int64) string {
	if v < 0 {
		return "max"
	}
	return formatInt(v)
}

func TestCheckMemoryLimit(t *testing.T) {
	total := uint64(480 << 20)
	if err := CheckMemoryLimit(256<<20, total); err != nil {
		t.Fatal(err)
	}
	if err := CheckMemoryLimit(-1, total); err != nil {
		t.Fatal(err)
	}
	err := CheckMemoryLimit(512<<20+1, total)
	if err == nil || err.Error() != "the VM was booted with 480 MiB; a limit of 513 MiB cannot be met inside it" {
		t.Fatalf("err = %v", err)
	}
}

func TestParseMemTotal(t *testing.T) {
	v, err := ParseMemTotal(strings.NewReader("MemTotal:         491260 kB\nMemFree: 1 kB\n"))
	if err != nil || v != 491260*1024 {
		t.Fatalf("ParseMemTotal = %d, %v", v, err)
	}
	if _, err := ParseMemTotal(strings.NewReader("MemFree: 1 kB\n")); err == nil {
		t.Fatal("no MemTotal accepted")
	}
}

func TestParseResources(t *testing.T) {
	m := testManager()
	m.memTotal = func() (uint64, error) { return 480 << 20, nil }
	if r, err := m.parseResources(nil); r != nil || err != nil {
		t.Fatalf("empty: %v, %v", r, err)
	}
	if _, err := m.parseResources([]byte(`{"memory":{"limit":`)); err == nil {
		t.Fatal("bad JSON accepted")
	}
	if _, err := m.parseResources([]byte(`{"memory":{"limit":1073741824}}`)); err == nil || !strings.Contains(err.Error(), "booted with 480 MiB; a limit of 1024 MiB") {
		t.Fatalf("too large: %v", err)
	}
	r, err := m.parseResources([]byte(`{"memory":{"limit":33554432},"pids":{"limit":10}}`))
	if err != nil || *r.Memory.Limit != 32<<20 || *r.Pids.Limit != 10 {
		t.Fatalf("parse: %+v, %v", r, err)
	}
}
