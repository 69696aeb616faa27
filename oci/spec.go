package oci

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// MinMemoryMiB is the least memory a guest boots with.
const MinMemoryMiB = 64

// ReadSpec loads the bundle's config.json.
func ReadSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read OCI spec: %w", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse OCI spec %s: %w", filepath.Join(bundle, "config.json"), err)
	}
	if s.Process == nil || len(s.Process.Args) == 0 {
		return nil, fmt.Errorf("OCI spec has no process args: nothing to run")
	}
	return &s, nil
}

// VMDefaults are the runtime config's VM sizes: MemoryMiB and CPUs for a
// container without resource limits, OverheadMiB added to a memory limit
// for the guest kernel and agent.
type VMDefaults struct {
	MemoryMiB   uint64
	CPUs        uint32
	OverheadMiB uint64
}

// VMResources sizes the VM: from the OCI resource limits (memory limit
// plus overhead; CPU quota/period rounded up, or the cpuset's size), else
// the config's defaults; a pod's sandbox by its pod's summed limits (the
// CRI sandbox-memory and -cpu-quota/-period annotations). The vm.*
// annotations may lower what the OCI limits give, never raise it: the
// limits are the operator's (Docker's --memory, Kubernetes' resources),
// the annotations the container's. Without an OCI limit an annotation
// sizes the VM freely. vCPUs never exceed the host's.
func VMResources(s *specs.Spec, settings *Settings, cfg VMDefaults) (memMiB uint64, cpus uint32, err error) {
	memMiB, cpus = cfg.MemoryMiB, cfg.CPUs
	var memLimited, cpuLimited bool
	var limitMiB uint64
	var cpuWhy string
	var r *specs.LinuxResources
	if s.Linux != nil {
		r = s.Linux.Resources
	}
	if s.Annotations[AnnotationCRIContainerType] == criTypeSandbox {
		// A pod's VM is sized for the whole pod, from its summed limits.
		if r, err = podLimits(s); err != nil {
			return 0, 0, err
		}
	}
	if r != nil {
		if r.Memory != nil && r.Memory.Limit != nil && *r.Memory.Limit > 0 {
			limitMiB = (uint64(*r.Memory.Limit) + (1<<20 - 1)) >> 20
			memMiB = max(limitMiB+cfg.OverheadMiB, MinMemoryMiB)
			memLimited = true
		}
		if r.CPU != nil {
			if r.CPU.Quota != nil && *r.CPU.Quota > 0 && r.CPU.Period != nil && *r.CPU.Period > 0 {
				q, p := uint64(*r.CPU.Quota), *r.CPU.Period
				cpus = uint32(min((q+p-1)/p, 1<<16))
				cpuLimited = true
				cpuWhy = fmt.Sprintf("the container's CPU quota (%d/%d)", q, p)
			} else if n := cpusetSize(r.CPU.Cpus); n > 0 {
				cpus = n
				cpuLimited = true
				cpuWhy = fmt.Sprintf("the container's cpuset (%q)", r.CPU.Cpus)
			}
		}
	}
	if settings != nil && settings.MemoryMiB > 0 {
		if memLimited && settings.MemoryMiB > memMiB {
			return 0, 0, fmt.Errorf("annotation %s = %d MiB exceeds the %d MiB the container's memory limit gives its VM (%d MiB limit + memory_overhead_mib %d): the annotation may only lower the VM's memory",
				AnnotationVMMemory, settings.MemoryMiB, memMiB, limitMiB, cfg.OverheadMiB)
		}
		memMiB = settings.MemoryMiB
	}
	if settings != nil && settings.CPUs > 0 {
		if cpuLimited && settings.CPUs > cpus {
			return 0, 0, fmt.Errorf("annotation %s = %d exceeds the %d vCPUs %s gives the VM: the annotation may only lower the VM's vCPUs",
				AnnotationVMCPUs, settings.CPUs, cpus, cpuWhy)
		}
		cpus = settings.CPUs
	}
	if host := uint32(runtime.NumCPU()); cpus > host {
		cpus = host
	}
	return memMiB, max(cpus, 1), nil
}

// cpusetSize counts the CPUs in a cpuset list such as "0-3,6"; 0 if empty
// or malformed.
func cpusetSize(set string) uint32 {
	var n uint32
	for _, part := range strings.Split(set, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		var lo, hi uint32
		if _, err := fmt.Sscanf(part, "%d-%d", &lo, &hi); err == nil && hi >= lo {
			n += hi - lo + 1
		} else if _, err := fmt.Sscanf(part, "%d", &lo); err == nil {
			n++
		} else {
			return 0
		}
	}
	return n
}

// guestFilesystems are mount types the guest provides itself.
var guestFilesystems = map[string]bool{
	"proc": true, "sysfs": true, "tmpfs": true, "devpts": true,
	"mqueue": true, "cgroup": true, "cgroup2": true,
}

// HostBind is a host path a container bind-mounts. The runtime mounts
// Source at <binds share>/Name on the host (read-only there, recursively,
// when Readonly, so a guest cannot remount its way to writing it or a mount
// below it) and the guest binds that entry onto the container's
// destination.
type HostBind struct {
	Name     string
	Source   string
	Readonly bool
}

// ReadonlyRoot says the container's root file system is read-only
// (root.readonly: ctr run --read-only, docker run --read-only).
func ReadonlyRoot(s *specs.Spec) bool {
	return s.Root != nil && s.Root.Readonly
}

// GuestContainer is a container as the guest runs it, translated from the
// bundle's spec and validated: its process, its mounts, the host bind
// mounts the runtime must share into the guest, and its Linux settings.
// Request makes the agent's create request from it and what the runtime
// learns while it creates the container, in one place: nothing patches the
// request afterwards.
type GuestContainer struct {
	// Binds are the host bind mounts the runtime shares into the guest
	// (the binds share), one entry each.
	Binds []HostBind

	id       string
	hostname string
	// readonly: the guest makes the root read-only for the container; the
	// runtime makes it read-only on the host as well (ReadonlyRoot), so a
	// guest that remounts it read-write still cannot write it.
	readonly bool
	process  *api.Process
	mounts   []*api.Mount
	// bindMounts are the indexes in mounts of the host binds, whose
	// sources are the binds' names until Request places them.
	bindMounts    []int
	maskedPaths   []string
	readonlyPaths []string
	sysctl        map[string]string
	resources     []byte
}

// GuestSetup is what the create request needs beyond the bundle: what the
// runtime has made for the container by the time the guest creates it.
type GuestSetup struct {
	// Placeholders stand for the secrets' values (name to placeholder) in
	// the process's environment: the real values stay on the host.
	Placeholders map[string]string
	// ExtraCAPEM are certificates the container trusts besides its
	// image's (the egress proxy's CA); nil without a network.
	ExtraCAPEM []byte
	// ResolvConf is the guest's /etc/resolv.conf; "" without a network.
	ResolvConf string
	// Stdio says which of the process's streams the host has opened.
	Stdio *api.Stdio
	// Pod places a pod's container in its pod's VM; nil for a container
	// that has a VM of its own.
	Pod *PodPlacement
}

// PodPlacement is where a pod's container lives in its pod's VM.
type PodPlacement struct {
	// ShareTag is the pod's share, Dir the container's directory in it:
	// Dir/rootfs is its root, Dir/binds its binds share.
	ShareTag string
	Dir      string
	// JoinContainer is the container whose namespaces Join lists ("ipc",
	// "uts", "pid") the container joins: its pod's sandbox.
	JoinContainer string
	Join          []string
}

// NewGuestContainer translates and validates the spec of container id,
// which belongs to pod.
func NewGuestContainer(id string, s *specs.Spec, pod Pod) (*GuestContainer, error) {
	proc, err := guestProcess(s.Process)
	if err != nil {
		return nil, err
	}
	g := &GuestContainer{id: id, hostname: s.Hostname, readonly: ReadonlyRoot(s), process: proc}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Destination) {
			return nil, fmt.Errorf("mount destination %q is not an absolute path", m.Destination)
		}
		typ := m.Type
		if typ == "" || typ == "none" {
			if hasOption(m.Options, "bind", "rbind") {
				typ = "bind"
			}
		}
		switch {
		case typ == "bind" && isPodShm(m, pod.SandboxID):
			g.mounts = append(g.mounts, podShmMount(m))
		case guestFilesystems[typ]:
			g.mounts = append(g.mounts, &api.Mount{
				Destination: filepath.Clean(m.Destination),
				Type:        typ,
				Source:      m.Source,
				Options:     m.Options,
			})
		case typ == "bind":
			if !filepath.IsAbs(m.Source) {
				return nil, fmt.Errorf("bind mount of %s: source %q is not an absolute host path", m.Destination, m.Source)
			}
			b := HostBind{Name: fmt.Sprint(len(g.Binds)), Source: m.Source, Readonly: hasOption(m.Options, "ro")}
			g.Binds = append(g.Binds, b)
			g.bindMounts = append(g.bindMounts, len(g.mounts))
			g.mounts = append(g.mounts, &api.Mount{
				Destination: filepath.Clean(m.Destination),
				Type:        "bind",
				Source:      b.Name, // below the binds share: Request says where
				Options:     m.Options,
			})
		default:
			return nil, fmt.Errorf("mount of %s has type %q, which a VM guest cannot provide: accepted are bind mounts of host paths and proc, sysfs, tmpfs, devpts, mqueue, cgroup", m.Destination, m.Type)
		}
	}
	if l := s.Linux; l != nil {
		g.maskedPaths = l.MaskedPaths
		g.readonlyPaths = l.ReadonlyPaths
		g.sysctl = l.Sysctl
		if l.Resources != nil {
			b, err := json.Marshal(l.Resources)
			if err != nil {
				return nil, fmt.Errorf("encode resources: %w", err)
			}
			g.resources = b
		}
	}
	return g, nil
}

// Request is the agent's create request for the container, given what the
// runtime made for it.
func (g *GuestContainer) Request(setup GuestSetup) *api.CreateContainerRequest {
	proc := proto.Clone(g.process).(*api.Process)
	proc.Env = guestEnv(g.process.Env, setup.Placeholders)
	req := &api.CreateContainerRequest{
		ContainerId:    g.id,
		RootfsTag:      api.RootfsTag,
		RootfsReadonly: g.readonly,
		Hostname:       g.hostname,
		Process:        proc,
		MaskedPaths:    g.maskedPaths,
		ReadonlyPaths:  g.readonlyPaths,
		Sysctl:         g.sysctl,
		ResourcesJson:  g.resources,
		ExtraCaPem:     setup.ExtraCAPEM,
		ResolvConf:     setup.ResolvConf,
		Stdio:          setup.Stdio,
	}
	bindsDir := filepath.Join(api.SharesDir, api.BindsTag)
	if pod := setup.Pod; pod != nil {
		req.RootfsTag = pod.ShareTag
		req.RootfsPath = path.Join(pod.Dir, "rootfs")
		bindsDir = filepath.Join(api.SharesDir, pod.ShareTag, pod.Dir, "binds")
		req.JoinContainerId = pod.JoinContainer
		req.JoinNamespaces = pod.Join
		if slices.Contains(pod.Join, "uts") {
			// The pod's hostname, which its sandbox set.
			req.Hostname = ""
		}
	} else if len(g.bindMounts) > 0 {
		req.Shares = []*api.Share{{Tag: api.BindsTag}}
	}
	req.Mounts = make([]*api.Mount, len(g.mounts))
	for i, m := range g.mounts {
		req.Mounts[i] = m
	}
	for _, i := range g.bindMounts {
		m := proto.Clone(g.mounts[i]).(*api.Mount)
		m.Source = filepath.Join(bindsDir, m.Source)
		req.Mounts[i] = m
	}
	return req
}

// GuestProcess translates an OCI process (an exec's) for the guest, with
// the secrets' values in its environment replaced by placeholders.
func GuestProcess(p *specs.Process, placeholders map[string]string) (*api.Process, error) {
	out, err := guestProcess(p)
	if err != nil {
		return nil, err
	}
	out.Env = guestEnv(out.Env, placeholders)
	return out, nil
}

// guestEnv replaces the value of every secret in env by its placeholder,
// so that the real value never reaches the VM, and adds the secrets env
// lacks (those read from the host) with their placeholders.
func guestEnv(env []string, placeholders map[string]string) []string {
	if len(placeholders) == 0 {
		return env
	}
	out := make([]string, len(env), len(env)+len(placeholders))
	seen := make(map[string]bool, len(placeholders))
	for i, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if ph, ok := placeholders[name]; ok {
			kv = name + "=" + ph
			seen[name] = true
		}
		out[i] = kv
	}
	names := make([]string, 0, len(placeholders))
	for name := range placeholders {
		if !seen[name] {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		out = append(out, name+"="+placeholders[name])
	}
	return out
}

// guestProcess translates and validates an OCI process.
func guestProcess(p *specs.Process) (*api.Process, error) {
	if p == nil || len(p.Args) == 0 {
		return nil, fmt.Errorf("process has no args: nothing to run")
	}
	if p.CommandLine != "" {
		return nil, fmt.Errorf("process.commandLine is for Windows containers; use process.args")
	}
	cwd := p.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if !filepath.IsAbs(cwd) {
		return nil, fmt.Errorf("process cwd %q is not an absolute path", p.Cwd)
	}
	out := &api.Process{
		Args:            p.Args,
		Env:             p.Env,
		Cwd:             cwd,
		Terminal:        p.Terminal,
		NoNewPrivileges: p.NoNewPrivileges,
		User: &api.User{
			Uid:            p.User.UID,
			Gid:            p.User.GID,
			AdditionalGids: p.User.AdditionalGids,
		},
	}
	if c := p.Capabilities; c != nil {
		out.Capabilities = &api.Capabilities{
			Bounding: c.Bounding, Effective: c.Effective, Inheritable: c.Inheritable,
			Permitted: c.Permitted, Ambient: c.Ambient,
		}
	}
	if p.User.Umask != nil {
		out.User.Umask, out.User.HasUmask = *p.User.Umask, true
	}
	if p.User.Username != "" {
		return nil, fmt.Errorf("process.user.username is for Windows containers; give uid and gid")
	}
	for _, r := range p.Rlimits {
		if !strings.HasPrefix(r.Type, "RLIMIT_") {
			return nil, fmt.Errorf("rlimit type %q is not an RLIMIT_* name", r.Type)
		}
		out.Rlimits = append(out.Rlimits, &api.Rlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft})
	}
	return out, nil
}

func hasOption(opts []string, names ...string) bool {
	for _, o := range opts {
		for _, n := range names {
			if o == n {
				return true
			}
		}
	}
	return false
}

// guestDevices are the device nodes every container's /dev has in the
// guest (the agent creates them from the guest kernel's own devices).
var guestDevices = map[string]bool{
	"/dev/null": true, "/dev/zero": true, "/dev/full": true,
	"/dev/random": true, "/dev/urandom": true, "/dev/tty": true,
	"/dev/console": true, "/dev/ptmx": true,
}

// HostDevices lists the spec's devices that the guest does not provide:
// host devices (docker --device, --privileged) cannot be reached from
// inside the VM, so they are not there (as with Kata's
// privileged_without_host_devices).
func HostDevices(s *specs.Spec) []string {
	if s.Linux == nil {
		return nil
	}
	var out []string
	for _, d := range s.Linux.Devices {
		if !guestDevices[d.Path] {
			out = append(out, d.Path)
		}
	}
	return out
}
