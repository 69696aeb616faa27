package oci

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

func i64(v int64) *int64    { return &v }
func u64(v uint64) *uint64  { return &v }
func u32p(v uint32) *uint32 { return &v }

func TestVMResources(t *testing.T) {
	cfg := VMDefaults{MemoryMiB: 512, CPUs: 1, OverheadMiB: 128}
	withLimits := &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: i64(300 << 20)},
		CPU:    &specs.LinuxCPU{Quota: i64(150000), Period: u64(100000)},
	}}}
	mem, cpus, err := VMResources(withLimits, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if mem != 300+cfg.OverheadMiB {
		t.Errorf("memory = %d, want limit + overhead", mem)
	}
	if want := min(uint32(2), uint32(runtime.NumCPU())); cpus != want {
		t.Errorf("cpus = %d, want %d (1.5 rounded up, capped by host)", cpus, want)
	}
	mem, cpus, _ = VMResources(&specs.Spec{}, nil, cfg)
	if mem != cfg.MemoryMiB || cpus != cfg.CPUs {
		t.Errorf("defaults: %d MiB %d cpus", mem, cpus)
	}
	// Without OCI limits the annotations size the VM freely.
	if mem, _, err = VMResources(&specs.Spec{}, &Settings{MemoryMiB: 2048}, cfg); err != nil || mem != 2048 {
		t.Errorf("annotation without a limit: %d, %v", mem, err)
	}
	// With them, an annotation may lower the VM, never raise it.
	if mem, _, err = VMResources(withLimits, &Settings{MemoryMiB: 256}, cfg); err != nil || mem != 256 {
		t.Errorf("annotation lowering the memory: %d, %v", mem, err)
	}
	_, _, err = VMResources(withLimits, &Settings{MemoryMiB: 2048}, cfg)
	if err == nil || !strings.Contains(err.Error(), AnnotationVMMemory) || !strings.Contains(err.Error(), "2048") || !strings.Contains(err.Error(), "428") {
		t.Errorf("annotation raising the memory over the limit: %v", err)
	}
	if _, cpus, err = VMResources(withLimits, &Settings{CPUs: 1}, cfg); err != nil || cpus != 1 {
		t.Errorf("annotation lowering the vCPUs: %d, %v", cpus, err)
	}
	_, _, err = VMResources(withLimits, &Settings{CPUs: 8}, cfg)
	if err == nil || !strings.Contains(err.Error(), AnnotationVMCPUs) || !strings.Contains(err.Error(), "150000/100000") {
		t.Errorf("annotation raising the vCPUs over the quota: %v", err)
	}
	cpuset := &specs.Spec{Linux: &specs.Linux{Resources: &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "0"}}}}
	if _, cpus, _ = VMResources(cpuset, nil, cfg); cpus != 1 {
		t.Errorf("cpuset 0: %d cpus", cpus)
	}
	if _, _, err = VMResources(cpuset, &Settings{CPUs: 2}, cfg); err == nil {
		t.Errorf("annotation raising the vCPUs over the cpuset: accepted")
	}
}

func TestCpusetSize(t *testing.T) {
	for set, want := range map[string]uint32{"": 0, "0": 1, "0-3": 4, "0-1,4,6-7": 5, "x": 0} {
		if got := cpusetSize(set); got != want {
			t.Errorf("cpusetSize(%q) = %d, want %d", set, got, want)
		}
	}
}

func TestGuestContainer(t *testing.T) {
	s := &specs.Spec{
		Hostname: "box",
		Root:     &specs.Root{Path: "rootfs", Readonly: true},
		Process: &specs.Process{
			Args: []string{"sh", "-c", "id"}, Env: []string{"PATH=/bin"},
			User:    specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{10}, Umask: u32p(0o27)},
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 512}},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev/pts/", Type: "devpts", Source: "devpts", Options: []string{"newinstance"}},
		},
	}
	g, err := NewGuestContainer("c1", s, Pod{})
	if err != nil {
		t.Fatal(err)
	}
	req := g.Request(GuestSetup{})
	if req.Hostname != "box" || !req.RootfsReadonly || req.RootfsTag != api.RootfsTag {
		t.Errorf("request = %v", req)
	}
	p := req.Process
	if p.Cwd != "/" || p.User.Uid != 1000 || !p.User.HasUmask || p.User.Umask != 0o27 || p.Rlimits[0].Soft != 512 {
		t.Errorf("process = %v", p)
	}
	if req.Mounts[1].Destination != "/dev/pts" {
		t.Errorf("destination not cleaned: %s", req.Mounts[1].Destination)
	}
}

func TestGuestContainerRejects(t *testing.T) {
	base := func() *specs.Spec {
		return &specs.Spec{Process: &specs.Process{Args: []string{"true"}}}
	}
	bind := base()
	bind.Mounts = []specs.Mount{{Destination: "/data", Source: "relative", Options: []string{"rbind"}}}
	if _, err := NewGuestContainer("c", bind, Pod{}); err == nil || !strings.Contains(err.Error(), "not an absolute host path") {
		t.Errorf("relative bind source: %v", err)
	}
	odd := base()
	odd.Mounts = []specs.Mount{{Destination: "/x", Type: "nfs", Source: "srv:/x"}}
	if _, err := NewGuestContainer("c", odd, Pod{}); err == nil || !strings.Contains(err.Error(), `type "nfs"`) {
		t.Errorf("nfs mount: %v", err)
	}
	rel := base()
	rel.Process.Cwd = "work"
	if _, err := NewGuestContainer("c", rel, Pod{}); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
		t.Errorf("relative cwd: %v", err)
	}
	noargs := base()
	noargs.Process.Args = nil
	if _, err := NewGuestContainer("c", noargs, Pod{}); err == nil {
		t.Error("empty args accepted")
	}
}

func TestReadSpec(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadSpec(dir); err == nil {
		t.Fatal("missing config.json accepted")
	}
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"process":{"args":["true"]}}`), 0o644)
	if s, err := ReadSpec(dir); err != nil || s.Process.Args[0] != "true" {
		t.Fatalf("ReadSpec: %v %v", s, err)
	}
}

func TestGuestContainerBindsAndSecurity(t *testing.T) {
	s := &specs.Spec{
		Process: &specs.Process{Args: []string{"true"}, Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_CHOWN"}}},
		Mounts: []specs.Mount{
			{Destination: "/data", Type: "bind", Source: "/srv/data", Options: []string{"rbind", "ro"}},
			{Destination: "/etc/hosts", Source: "/var/lib/x/hosts", Options: []string{"bind"}},
		},
		Linux: &specs.Linux{
			MaskedPaths:   []string{"/proc/kcore"},
			ReadonlyPaths: []string{"/proc/sys"},
			Sysctl:        map[string]string{"net.ipv4.ip_forward": "1"},
			Resources:     &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(64)}},
		},
	}
	g, err := NewGuestContainer("c", s, Pod{})
	if err != nil {
		t.Fatal(err)
	}
	binds, req := g.Binds, g.Request(GuestSetup{})
	if len(binds) != 2 || binds[0] != (HostBind{Name: "0", Source: "/srv/data", Readonly: true}) || binds[1].Readonly {
		t.Fatalf("binds = %+v", binds)
	}
	if req.Mounts[0].Source != "/run/gondolin/shares/binds/0" || req.Mounts[1].Source != "/run/gondolin/shares/binds/1" || req.Mounts[1].Type != "bind" {
		t.Fatalf("guest mounts = %v", req.Mounts)
	}
	if len(req.Shares) != 1 || req.Shares[0].Tag != api.BindsTag {
		t.Fatalf("shares = %v", req.Shares)
	}
	if req.Process.Capabilities.Bounding[0] != "CAP_CHOWN" || req.MaskedPaths[0] != "/proc/kcore" || req.Sysctl["net.ipv4.ip_forward"] != "1" {
		t.Fatalf("security settings lost: %v", req)
	}
	if !strings.Contains(string(req.ResourcesJson), `"limit":64`) {
		t.Fatalf("resources = %s", req.ResourcesJson)
	}
}

// The create request carries what the runtime made for the container, and
// the secrets only as placeholders (added when the spec's environment
// lacks them); building it again gives the same request.
func TestGuestContainerRequest(t *testing.T) {
	s := &specs.Spec{Process: &specs.Process{Args: []string{"true"}, Env: []string{"TOKEN=real-value", "PATH=/bin"}}}
	g, err := NewGuestContainer("c", s, Pod{})
	if err != nil {
		t.Fatal(err)
	}
	setup := GuestSetup{
		Placeholders: map[string]string{"TOKEN": "ph-1", "HOSTSECRET": "ph-2"},
		ExtraCAPEM:   []byte("PEM"),
		ResolvConf:   "nameserver 10.0.2.3\n",
		Stdio:        &api.Stdio{Stdout: true},
	}
	req := g.Request(setup)
	if want := []string{"TOKEN=ph-1", "PATH=/bin", "HOSTSECRET=ph-2"}; !slices.Equal(req.Process.Env, want) {
		t.Errorf("env = %q, want %q", req.Process.Env, want)
	}
	if string(req.ExtraCaPem) != "PEM" || req.ResolvConf != setup.ResolvConf || !req.Stdio.Stdout || req.ContainerId != "c" {
		t.Errorf("request = %v", req)
	}
	if again := g.Request(setup); !proto.Equal(again, req) {
		t.Errorf("a second request differs: %v", again)
	}
	if !slices.Equal(s.Process.Env, []string{"TOKEN=real-value", "PATH=/bin"}) {
		t.Errorf("the spec's environment changed: %q", s.Process.Env)
	}
	if got := g.Request(GuestSetup{}).Process.Env; !slices.Equal(got, s.Process.Env) {
		t.Errorf("env without secrets = %q", got)
	}
}

// An exec's process gets the placeholders too.
func TestGuestProcessPlaceholders(t *testing.T) {
	p, err := GuestProcess(&specs.Process{Args: []string{"env"}, Env: []string{"PATH=/bin", "TOKEN=real-value"}}, map[string]string{"TOKEN": "ph"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"PATH=/bin", "TOKEN=ph"}; !slices.Equal(p.Env, want) {
		t.Errorf("env = %q, want %q", p.Env, want)
	}
	if _, err := GuestProcess(&specs.Process{}, nil); err == nil {
		t.Error("a process without args accepted")
	}
}

func TestHostDevices(t *testing.T) {
	s := &specs.Spec{Linux: &specs.Linux{Devices: []specs.LinuxDevice{
		{Path: "/dev/null"}, {Path: "/dev/urandom"}, {Path: "/dev/fuse"}, {Path: "/dev/sda"},
	}}}
	if got := HostDevices(s); len(got) != 2 || got[0] != "/dev/fuse" || got[1] != "/dev/sda" {
		t.Fatalf("HostDevices = %v", got)
	}
	if got := HostDevices(&specs.Spec{}); got != nil {
		t.Fatalf("no linux section: %v", got)
	}
}
