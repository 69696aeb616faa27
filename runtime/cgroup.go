package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	"github.com/containerd/cgroups/v3/cgroup2"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The VM's host processes (QEMU and every virtiofsd) run in the container's
// own host cgroup, linux.cgroupsPath, so that the limits Docker and
// Kubernetes set there bound what the VM costs the host, whatever the guest
// does. The shim itself stays where containerd started it, as runc's shim
// does (it moves only into the ShimCgroup option's cgroup) and as Kata does
// by default (sandbox_cgroup_only = false): the shim must outlive an OOM in
// the container's cgroup to report the exit and clean up, and what a guest
// can make it spend is bounded by [limits] instead.

// cgroupsRoot is where the cgroup file systems are mounted.
const cgroupsRoot = "/sys/fs/cgroup"

// hostCgroup is the container's cgroup on the host.
type hostCgroup struct {
	// path is the cgroup's path below the hierarchies' roots.
	path string
	// created says the shim made the cgroup, so it removes it at delete.
	created bool
	v1      cgroup1.Cgroup
	v2      *cgroup2.Manager
}

// hostCgroupLimits are what the host cgroup allows the VM's processes.
type hostCgroupLimits struct {
	// memoryBytes is memory.max (memory.limit_in_bytes on v1).
	memoryBytes int64
	// overheadMiB is what of it is the host processes' own
	// (limits.host_memory_overhead_mib), for errors.
	overheadMiB int
	// cpuQuota per cpuPeriod microseconds is cpu.max; 0 leaves it alone.
	cpuQuota  int64
	cpuPeriod uint64
}

// hostCgroupPath turns linux.cgroupsPath into a path below the cgroup
// hierarchies' roots. A systemd-style "slice:prefix:name" (Docker and the
// kubelet with the systemd cgroup driver) names the scope prefix-name.scope
// in slice, which systemd nests by the slice's dashes (a-b.slice is
// /a.slice/a-b.slice); a plain path is taken as it is, relative paths below
// the root.
func hostCgroupPath(cgroupsPath string) (string, error) {
	if cgroupsPath == "" {
		return "", nil
	}
	p := cgroupsPath
	if !strings.HasPrefix(p, "/") && strings.Count(p, ":") == 2 {
		parts := strings.SplitN(p, ":", 3)
		slice, prefix, name := parts[0], parts[1], parts[2]
		if name == "" {
			return "", fmt.Errorf("linux.cgroupsPath %q: a systemd path slice:prefix:name needs a name", cgroupsPath)
		}
		if slice == "" {
			slice = "system.slice"
		}
		dir, err := expandSlice(slice)
		if err != nil {
			return "", fmt.Errorf("linux.cgroupsPath %q: %w", cgroupsPath, err)
		}
		unit := name
		if !strings.HasSuffix(name, ".slice") {
			if prefix != "" {
				unit = prefix + "-" + name
			}
			unit += ".scope"
		}
		p = filepath.Join(dir, unit)
	}
	p = filepath.Clean("/" + p)
	for _, el := range strings.Split(cgroupsPath, "/") {
		if el == ".." {
			return "", fmt.Errorf("linux.cgroupsPath %q: must not contain \"..\"", cgroupsPath)
		}
	}
	if p == "/" {
		return "", fmt.Errorf("linux.cgroupsPath %q: the root cgroup cannot hold a container", cgroupsPath)
	}
	return p, nil
}

// expandSlice is systemd's nesting of a slice name: "a-b-c.slice" lives in
// /a.slice/a-b.slice/a-b-c.slice.
func expandSlice(slice string) (string, error) {
	const suffix = ".slice"
	if !strings.HasSuffix(slice, suffix) || strings.Contains(slice, "/") {
		return "", fmt.Errorf("slice %q is not a systemd slice name", slice)
	}
	if slice == "-.slice" {
		return "/", nil
	}
	name := strings.TrimSuffix(slice, suffix)
	if strings.HasPrefix(name, "-") || strings.HasSuffix(name, "-") || strings.Contains(name, "--") {
		return "", fmt.Errorf("slice %q is not a systemd slice name", slice)
	}
	dir, prefix := "/", ""
	for _, part := range strings.Split(name, "-") {
		prefix += part
		dir = filepath.Join(dir, prefix+suffix)
		prefix += "-"
	}
	return dir, nil
}

// openHostCgroup joins (creating it if needed) the container's host cgroup
// and sets its limits. A cgroupsPath of "" means none: nil, nil.
func openHostCgroup(cgroupsPath string, lim hostCgroupLimits) (*hostCgroup, error) {
	path, err := hostCgroupPath(cgroupsPath)
	if err != nil || path == "" {
		return nil, err
	}
	h := &hostCgroup{path: path}
	v2 := cgroups.Mode() == cgroups.Unified
	if err := checkAncestorMemory(cgroupsRoot, v2, path, lim.memoryBytes, lim.overheadMiB); err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
	}
	switch cgroups.Mode() {
	case cgroups.Unified:
		dir := filepath.Join(cgroupsRoot, path)
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			h.created = true
		}
		res := &cgroup2.Resources{Memory: &cgroup2.Memory{Max: &lim.memoryBytes}}
		if lim.cpuQuota > 0 && lim.cpuPeriod > 0 {
			res.CPU = &cgroup2.CPU{Max: cgroup2.NewCPUMax(&lim.cpuQuota, &lim.cpuPeriod)}
		}
		m, err := cgroup2.NewManager(cgroupsRoot, path, res)
		if err != nil {
			return nil, fmt.Errorf("set up the container's host cgroup %s (linux.cgroupsPath %q): %w", dir, cgroupsPath, err)
		}
		h.v2 = m
	case cgroups.Legacy, cgroups.Hybrid:
		if _, err := os.Stat(filepath.Join(cgroupsRoot, "memory", path)); errors.Is(err, os.ErrNotExist) {
			h.created = true
		}
		res := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &lim.memoryBytes}}
		if lim.cpuQuota > 0 && lim.cpuPeriod > 0 {
			res.CPU = &specs.LinuxCPU{Quota: &lim.cpuQuota, Period: &lim.cpuPeriod}
		}
		cg, err := cgroup1.New(cgroup1.StaticPath(path), res)
		if err != nil {
			return nil, fmt.Errorf("set up the container's host cgroup %s (linux.cgroupsPath %q): %w", path, cgroupsPath, err)
		}
		h.v1 = cg
	default:
		return nil, fmt.Errorf("linux.cgroupsPath %q is set but this host has no cgroup file system at %s", cgroupsPath, cgroupsRoot)
	}
	return h, nil
}

// add moves a process of the VM into the cgroup.
func (h *hostCgroup) add(pid int) error {
	if h == nil {
		return nil
	}
	var err error
	if h.v2 != nil {
		err = h.v2.AddProc(uint64(pid))
	} else {
		err = h.v1.AddProc(uint64(pid))
	}
	if err != nil {
		return fmt.Errorf("move process %d into the container's host cgroup %s: %w", pid, h.path, err)
	}
	return nil
}

// removeHostCgroupWait bounds how long removal waits for the cgroup's
// processes to be gone: after a shim died, its QEMU and virtiofsds are
// killed but reaped by whichever process inherited them, a moment later.
const removeHostCgroupWait = 3 * time.Second

// removeHostCgroup deletes the cgroup at path (below the hierarchies'
// roots) in every hierarchy; a missing one is fine. The path is the shim's
// own record, never anything the guest wrote.
func removeHostCgroup(path string) error {
	if path == "" || path == "/" {
		return nil
	}
	deadline := time.Now().Add(removeHostCgroupWait)
	for {
		err := removeHostCgroupOnce(path)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func removeHostCgroupOnce(path string) error {
	var err error
	switch cgroups.Mode() {
	case cgroups.Unified:
		var m *cgroup2.Manager
		if m, err = cgroup2.Load(path); err == nil {
			err = m.Delete()
		}
	case cgroups.Legacy, cgroups.Hybrid:
		var cg cgroup1.Cgroup
		if cg, err = cgroup1.Load(cgroup1.StaticPath(path)); err == nil {
			err = cg.Delete()
		}
	default:
		return nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return fmt.Errorf("remove the container's host cgroup %s: %w", path, err)
	}
	return nil
}

// hostFigures are what the host cgroup measured of the VM's processes.
type hostFigures struct {
	cpu    *v2stats.CPUStat
	memory *v2stats.MemoryStat
	events *v2stats.MemoryEvents
}

// figures reads the cgroup's CPU and memory figures, in cgroup v2 terms
// (containerd's v2 Metrics) on either version.
func (h *hostCgroup) figures() (hostFigures, error) {
	if h.v2 != nil {
		m, err := h.v2.StatFiltered(cgroup2.StatCPU | cgroup2.StatMemory | cgroup2.StatMemoryEvents)
		if err != nil {
			return hostFigures{}, fmt.Errorf("read the host cgroup %s: %w", h.path, err)
		}
		return hostFigures{cpu: m.GetCPU(), memory: m.GetMemory(), events: m.GetMemoryEvents()}, nil
	}
	m, err := h.v1.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return hostFigures{}, fmt.Errorf("read the host cgroup %s: %w", h.path, err)
	}
	return v1Figures(m), nil
}

// v1Figures translates cgroup v1 figures into their v2 equivalents.
func v1Figures(m *v1stats.Metrics) hostFigures {
	var f hostFigures
	if c := m.GetCPU(); c != nil {
		f.cpu = &v2stats.CPUStat{
			UsageUsec:     c.GetUsage().GetTotal() / 1000,
			UserUsec:      c.GetUsage().GetUser() / 1000,
			SystemUsec:    c.GetUsage().GetKernel() / 1000,
			NrPeriods:     c.GetThrottling().GetPeriods(),
			NrThrottled:   c.GetThrottling().GetThrottledPeriods(),
			ThrottledUsec: c.GetThrottling().GetThrottledTime() / 1000,
		}
	}
	if mem := m.GetMemory(); mem != nil {
		f.memory = &v2stats.MemoryStat{
			Anon:          mem.GetTotalRSS(),
			File:          mem.GetTotalCache(),
			FileMapped:    mem.GetTotalMappedFile(),
			FileDirty:     mem.GetTotalDirty(),
			FileWriteback: mem.GetTotalWriteback(),
			AnonThp:       mem.GetTotalRSSHuge(),
			InactiveAnon:  mem.GetTotalInactiveAnon(),
			ActiveAnon:    mem.GetTotalActiveAnon(),
			InactiveFile:  mem.GetTotalInactiveFile(),
			ActiveFile:    mem.GetTotalActiveFile(),
			Unevictable:   mem.GetTotalUnevictable(),
			Pgfault:       mem.GetTotalPgFault(),
			Pgmajfault:    mem.GetTotalPgMajFault(),
			Usage:         mem.GetUsage().GetUsage(),
			UsageLimit:    mem.GetUsage().GetLimit(),
			MaxUsage:      mem.GetUsage().GetMax(),
			SwapUsage:     mem.GetSwap().GetUsage(),
			SwapLimit:     mem.GetSwap().GetLimit(),
			SwapMaxUsage:  mem.GetSwap().GetMax(),
		}
		f.events = &v2stats.MemoryEvents{Max: mem.GetUsage().GetFailcnt(), OomKill: m.GetMemoryOomControl().GetOomKill()}
	}
	return f
}

// vmCgroupLimits are the host cgroup's limits for a VM of memMiB and cpus:
// memory.max is the VM's memory plus what its host processes need beside
// it (limits.host_memory_overhead_mib); cpu.max, when the container has a
// CPU quota, is the VM's vCPUs' worth of the quota's period (the quota
// rounded up to whole vCPUs: the guest enforces the exact quota inside).
func vmCgroupLimits(spec *specs.Spec, memMiB uint64, cpus uint32, overheadMiB int) hostCgroupLimits {
	lim := hostCgroupLimits{memoryBytes: int64(memMiB+uint64(max(overheadMiB, 0))) << 20, overheadMiB: overheadMiB}
	if spec.Linux != nil && spec.Linux.Resources != nil {
		if cpu := spec.Linux.Resources.CPU; cpu != nil && cpu.Quota != nil && *cpu.Quota > 0 && cpu.Period != nil && *cpu.Period > 0 {
			lim.cpuPeriod = *cpu.Period
			lim.cpuQuota = int64(cpus) * int64(*cpu.Period)
		}
	}
	return lim
}

// unlimitedV1 is cgroup v1's "no limit" in memory.limit_in_bytes (the
// largest multiple of the page size), or anything above it.
const unlimitedV1 = int64(1) << 62

// ancestorMemoryLimit is the smallest memory limit of the cgroups above
// path (below the hierarchies' roots, at root): where a pod's or a slice's
// cgroup caps everything under it. 0 means none. v2 picks the unified
// layout (memory.max), else v1's memory hierarchy (memory.limit_in_bytes).
func ancestorMemoryLimit(root string, v2 bool, path string) (limit int64, at string) {
	for dir := filepath.Dir(path); dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		file := filepath.Join(root, "memory", dir, "memory.limit_in_bytes")
		if v2 {
			file = filepath.Join(root, dir, "memory.max")
		}
		b, err := os.ReadFile(file)
		if err != nil {
			continue // not there yet, or no memory controller: no limit of its own
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			continue
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n >= unlimitedV1 {
			continue
		}
		if limit == 0 || n < limit {
			limit, at = n, dir
		}
	}
	return limit, at
}

// checkAncestorMemory refuses a VM whose host processes cannot fit in the
// cgroups above its own: the host kernel would OOM-kill QEMU as the guest
// boots (a kubelet caps a pod's cgroup at its containers' limits, plus the
// RuntimeClass's overhead.podFixed, which is the VM's overhead to cover).
func checkAncestorMemory(root string, v2 bool, path string, need int64, overheadMiB int) error {
	limit, at := ancestorMemoryLimit(root, v2, path)
	if limit == 0 || limit >= need {
		return nil
	}
	return fmt.Errorf("the host cgroup %s above the VM's allows %d MiB, but the VM needs %d MiB (its memory plus host_memory_overhead_mib %d) and would be OOM-killed: give the pod that much more memory (a RuntimeClass's overhead.podFixed, a static pod's spec.overhead: see docs/pods.md) or a smaller VM (io.gondolin.vm.memory)",
		at, limit>>20, need>>20, overheadMiB)
}
