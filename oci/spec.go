package oci

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// minMemoryMiB is the least memory a guest boots with.
const minMemoryMiB = 64

// RootfsTag is the virtio-fs tag of a container's root file system share.
const RootfsTag = "rootfs"

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

// VMResources sizes the VM: the vm.* annotations win, then the OCI resource
// limits (memory limit plus overhead; CPU quota/period rounded up, or the
// cpuset's size), then the config's defaults. vCPUs never exceed the host's.
func VMResources(s *specs.Spec, settings *Settings, cfg *Config) (memMiB uint64, cpus uint32) {
	memMiB, cpus = cfg.DefaultMemoryMiB, cfg.DefaultCPUs
	if s.Linux != nil && s.Linux.Resources != nil {
		r := s.Linux.Resources
		if r.Memory != nil && r.Memory.Limit != nil && *r.Memory.Limit > 0 {
			limit := (uint64(*r.Memory.Limit) + (1<<20 - 1)) >> 20
			memMiB = max(limit+cfg.MemoryOverheadMiB, minMemoryMiB)
		}
		if r.CPU != nil {
			if r.CPU.Quota != nil && *r.CPU.Quota > 0 && r.CPU.Period != nil && *r.CPU.Period > 0 {
				q, p := uint64(*r.CPU.Quota), *r.CPU.Period
				cpus = uint32((q + p - 1) / p)
			} else if n := cpusetSize(r.CPU.Cpus); n > 0 {
				cpus = n
			}
		}
	}
	if settings != nil && settings.MemoryMiB > 0 {
		memMiB = settings.MemoryMiB
	}
	if settings != nil && settings.CPUs > 0 {
		cpus = settings.CPUs
	}
	if host := uint32(runtime.NumCPU()); cpus > host {
		cpus = host
	}
	return memMiB, max(cpus, 1)
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

// GuestContainer translates the spec into the agent's create request.
func GuestContainer(id string, s *specs.Spec) (*api.CreateContainerRequest, error) {
	proc, err := GuestProcess(s.Process)
	if err != nil {
		return nil, err
	}
	req := &api.CreateContainerRequest{
		ContainerId: id,
		RootfsTag:   RootfsTag,
		Hostname:    s.Hostname,
		Process:     proc,
	}
	if s.Root != nil {
		req.RootfsReadonly = s.Root.Readonly
	}
	for _, m := range s.Mounts {
		typ := m.Type
		if typ == "" && hasOption(m.Options, "bind", "rbind") {
			typ = "bind"
		}
		if !guestFilesystems[typ] {
			return nil, fmt.Errorf("mount of %s (type %q, source %q) is not supported yet: a container may use only proc, sysfs, tmpfs, devpts, mqueue and cgroup mounts; host bind mounts are a known limit (docs/limits.md)", m.Destination, typ, m.Source)
		}
		if !filepath.IsAbs(m.Destination) {
			return nil, fmt.Errorf("mount destination %q is not an absolute path", m.Destination)
		}
		req.Mounts = append(req.Mounts, &api.Mount{
			Destination: filepath.Clean(m.Destination),
			Type:        typ,
			Source:      m.Source,
			Options:     m.Options,
		})
	}
	return req, nil
}

// GuestProcess translates an OCI process.
func GuestProcess(p *specs.Process) (*api.Process, error) {
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
