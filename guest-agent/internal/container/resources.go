package container

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agentlog"
)

const mib = 1 << 20

// parseResources parses OCI LinuxResources JSON (nil when empty) and
// checks that the guest can honour it.
func (m *Manager) parseResources(b []byte) (*specs.LinuxResources, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil
	}
	var r specs.LinuxResources
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("resources_json: %w", err)
	}
	if _, err := CgroupResources(&r); err != nil {
		return nil, err
	}
	if r.Memory != nil && r.Memory.Limit != nil && *r.Memory.Limit > 0 {
		total, err := m.memTotal()
		if err != nil {
			agentlog.Warnf("cannot check the memory limit against the guest's memory: %v", err)
		} else if err := CheckMemoryLimit(*r.Memory.Limit, total); err != nil {
			return nil, err
		}
	}
	return &r, nil
}

// CheckMemoryLimit refuses a limit the VM cannot reach: the guest's
// memory, not the cgroup, would run out first.
func CheckMemoryLimit(limit int64, memTotal uint64) error {
	if limit > 0 && uint64(limit) > memTotal {
		return fmt.Errorf("the VM was booted with %d MiB; a limit of %d MiB cannot be met inside it",
			memTotal/mib, (uint64(limit)+mib-1)/mib)
	}
	return nil
}

// CgroupResources translates OCI resources to what the guest's cgroup v2
// applies: memory (limit, swap, reservation), CPU (shares as weight, quota
// and period, cpuset) and pids. It starts from cgroup2.ToResources and
// fixes what that leaves to the caller: -1 means "max", unset periods get
// the kernel's default, swap is memory+swap in OCI but swap alone in v2.
// Block I/O, huge pages, RDMA and devices are not applied: the VM is the
// container's own machine.
func CgroupResources(r *specs.LinuxResources) (*cgroup2.Resources, error) {
	res := cgroup2.ToResources(r)
	res.IO, res.RDMA, res.HugeTlb, res.Devices = nil, nil, nil, nil
	res.CPU, res.Memory = nil, nil

	if cpu := r.CPU; cpu != nil {
		c := &cgroup2.CPU{Cpus: cpu.Cpus, Mems: cpu.Mems}
		if cpu.Shares != nil && *cpu.Shares != 0 {
			w := cgroup2.ConvertCPUSharesToCgroupV2Value(*cpu.Shares)
			c.Weight = &w
		}
		if cpu.Quota != nil || (cpu.Period != nil && *cpu.Period != 0) {
			var quota *int64 // nil: max
			if cpu.Quota != nil && *cpu.Quota > 0 {
				quota = cpu.Quota
			}
			period := uint64(100000)
			if cpu.Period != nil && *cpu.Period != 0 {
				period = *cpu.Period
			}
			c.Max = cgroup2.NewCPUMax(quota, &period)
		}
		if c.Weight != nil || c.Max != "" || c.Cpus != "" || c.Mems != "" {
			res.CPU = c
		}
	}

	if mem := r.Memory; mem != nil {
		mr := &cgroup2.Memory{}
		limit := int64(0)
		if mem.Limit != nil {
			limit = *mem.Limit
		}
		switch {
		case limit < -1:
			return nil, fmt.Errorf("invalid memory limit %d", limit)
		case limit == -1:
			v := int64(math.MaxInt64)
			mr.Max = &v
		case limit > 0:
			mr.Max = &limit
		}
		if mem.Swap != nil || limit == -1 {
			swap := int64(0)
			if mem.Swap != nil {
				swap = *mem.Swap
			}
			v, err := swapOnly(swap, limit)
			if err != nil {
				return nil, err
			}
			switch {
			case v == -1:
				max := int64(math.MaxInt64)
				mr.Swap = &max
			case v > 0 || (mem.Swap != nil && *mem.Swap > 0):
				mr.Swap = &v
			}
		}
		if mem.Reservation != nil && *mem.Reservation > 0 {
			low := *mem.Reservation
			mr.Low = &low
		}
		if mr.Max != nil || mr.Swap != nil || mr.Low != nil {
			res.Memory = mr
		}
	}
	return res, nil
}

// swapOnly converts OCI's memory+swap limit to cgroup v2's swap limit the
// way runc does (-1: max, 0: unset).
func swapOnly(memorySwap, memory int64) (int64, error) {
	if memory == -1 && memorySwap == 0 {
		return -1, nil
	}
	if memorySwap == -1 || memorySwap == 0 {
		return memorySwap, nil
	}
	if memory == 0 || memory == -1 {
		return 0, errors.New("unable to set a swap limit without a memory limit")
	}
	if memorySwap < memory {
		return 0, fmt.Errorf("memory+swap limit %d must not be below the memory limit %d", memorySwap, memory)
	}
	return memorySwap - memory, nil
}

// applyResources writes r to the cgroup at path (below the cgroup2 mount).
func applyResources(path string, r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	res, err := CgroupResources(r)
	if err != nil {
		return err
	}
	if res.Memory != nil && res.Memory.Swap != nil {
		if _, err := os.Stat(filepath.Join(path, "memory.swap.max")); err != nil {
			agentlog.Warnf("the guest kernel has no swap accounting; swap limit not applied")
			res.Memory.Swap = nil
		}
	}
	mgr, err := cgroup2.Load("/"+filepath.Base(path), cgroup2.WithMountpoint(filepath.Dir(path)))
	if err != nil {
		return err
	}
	if err := mgr.Update(res); err != nil {
		return fmt.Errorf("apply resources to cgroup %s: %w", path, err)
	}
	keys := make([]string, 0, len(r.Unified))
	for k := range r.Unified {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "" || strings.ContainsAny(k, "/\x00") || k == "." || k == ".." {
			return fmt.Errorf("invalid unified cgroup key %q", k)
		}
		if err := os.WriteFile(filepath.Join(path, k), []byte(r.Unified[k]), 0); err != nil {
			return fmt.Errorf("apply resources to cgroup %s: %w", path, err)
		}
	}
	return nil
}

// readMemTotal returns the guest's MemTotal in bytes.
func readMemTotal() (uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return ParseMemTotal(f)
}

// ParseMemTotal reads MemTotal (bytes) from /proc/meminfo text.
func ParseMemTotal(r io.Reader) (uint64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			v, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse MemTotal %q: %w", f[1], err)
			}
			if len(f) >= 3 && f[2] == "kB" {
				v *= 1024
			}
			return v, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no MemTotal in /proc/meminfo")
}
