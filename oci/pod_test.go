package oci

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

func TestParsePod(t *testing.T) {
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want Pod
		err  string
	}{
		{"standalone", nil, Pod{Role: Standalone}, ""},
		{"sandbox", map[string]string{AnnotationCRIContainerType: "sandbox", AnnotationCRISandboxID: "s1"}, Pod{Role: PodSandbox, SandboxID: "s1"}, ""},
		{"sandbox without id", map[string]string{AnnotationCRIContainerType: "sandbox"}, Pod{Role: PodSandbox, SandboxID: "s1"}, ""},
		{"sandbox naming another", map[string]string{AnnotationCRIContainerType: "sandbox", AnnotationCRISandboxID: "s2"}, Pod{}, "must be its own"},
		{"container", map[string]string{AnnotationCRIContainerType: "container", AnnotationCRISandboxID: "s0"}, Pod{Role: PodContainer, SandboxID: "s0"}, ""},
		{"container without sandbox", map[string]string{AnnotationCRIContainerType: "container"}, Pod{}, "needs the id of its pod's sandbox"},
		{"container naming itself", map[string]string{AnnotationCRIContainerType: "container", AnnotationCRISandboxID: "s1"}, Pod{}, "needs the id"},
		{"unknown type", map[string]string{AnnotationCRIContainerType: "pause"}, Pod{}, `accepted are "sandbox" and "container"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePod("s1", tc.ann)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func nsSpec(nss ...specs.LinuxNamespace) *specs.Spec {
	return &specs.Spec{Linux: &specs.Linux{Namespaces: nss}}
}

func TestPodNamespaces(t *testing.T) {
	net := specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/proc/42/ns/net"}
	ipc := specs.LinuxNamespace{Type: specs.IPCNamespace, Path: "/proc/42/ns/ipc"}
	uts := specs.LinuxNamespace{Type: specs.UTSNamespace, Path: "/proc/42/ns/uts"}
	pid := specs.LinuxNamespace{Type: specs.PIDNamespace, Path: "/proc/42/ns/pid"}
	ownPid := specs.LinuxNamespace{Type: specs.PIDNamespace}
	mnt := specs.LinuxNamespace{Type: specs.MountNamespace}
	for _, tc := range []struct {
		name string
		spec *specs.Spec
		want string
		err  string
	}{
		{"pod pid", nsSpec(mnt, net, ipc, uts, pid), "ipc,uts,pid", ""},
		{"own pid", nsSpec(mnt, net, ipc, uts, ownPid), "ipc,uts", ""},
		{"another process's ipc", nsSpec(net, specs.LinuxNamespace{Type: specs.IPCNamespace, Path: "/proc/1/ns/ipc"}, pid), "", "not its pod's (/proc/42/ns/ipc)"},
		{"a netns file", nsSpec(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/var/run/netns/x"}, ipc, pid), "", "not its pod's"},
		{"mount ns path", nsSpec(net, ipc, pid, specs.LinuxNamespace{Type: specs.MountNamespace, Path: "/proc/42/ns/mnt"}), "", "can join only"},
		{"host ipc", nsSpec(net, pid), "", "hostIPC"},
		{"host pid", nsSpec(net, ipc), "", "hostPID"},
		{"host network", nsSpec(ipc, pid), "", "hostNetwork"},
		{"no linux section", &specs.Spec{}, "", "hostNetwork"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PodNamespaces(tc.spec, 42)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || strings.Join(got, ",") != tc.want {
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

func TestCheckPodSandbox(t *testing.T) {
	ok := nsSpec(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1"},
		specs.LinuxNamespace{Type: specs.IPCNamespace}, specs.LinuxNamespace{Type: specs.PIDNamespace})
	if err := CheckPodSandbox(ok); err != nil {
		t.Fatal(err)
	}
	hostIPC := nsSpec(specs.LinuxNamespace{Type: specs.NetworkNamespace}, specs.LinuxNamespace{Type: specs.PIDNamespace})
	if err := CheckPodSandbox(hostIPC); err == nil || !strings.Contains(err.Error(), "hostIPC: true") {
		t.Fatalf("err = %v", err)
	}
}

// A sandbox's VM is sized by its pod's limits, not the pause process's.
func TestVMResourcesPodSandbox(t *testing.T) {
	defaults := VMDefaults{MemoryMiB: 512, CPUs: 1, OverheadMiB: 128}
	quota := int64(10000)
	s := &specs.Spec{
		Annotations: map[string]string{
			AnnotationCRIContainerType: "sandbox",
			AnnotationCRISandboxMemory: "268435456", // 256 MiB
			AnnotationCRISandboxQuota:  "100000",
			AnnotationCRISandboxPeriod: "100000",
		},
		Linux: &specs.Linux{Resources: &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &quota}}},
	}
	mem, cpus, err := VMResources(s, nil, defaults)
	if err != nil || mem != 256+128 || cpus != 1 {
		t.Fatalf("got %d MiB, %d vCPUs, %v; want 384 MiB, 1", mem, cpus, err)
	}
	// No pod limits: the defaults.
	s.Annotations = map[string]string{AnnotationCRIContainerType: "sandbox", AnnotationCRISandboxMemory: "0"}
	if mem, _, err = VMResources(s, nil, defaults); err != nil || mem != 512 {
		t.Fatalf("got %d MiB, %v; want the default 512", mem, err)
	}
	s.Annotations[AnnotationCRISandboxMemory] = "lots"
	if _, _, err = VMResources(s, nil, defaults); err == nil || !strings.Contains(err.Error(), AnnotationCRISandboxMemory) {
		t.Fatalf("err = %v, want one naming the annotation", err)
	}
}

// A pod's container takes its root and binds from the pod's share, joins
// the sandbox's namespaces and gets the pod's /dev/shm.
func TestGuestContainerInPod(t *testing.T) {
	s := &specs.Spec{
		Hostname: "pod-1",
		Process:  &specs.Process{Args: []string{"sh"}, Cwd: "/"},
		Mounts: []specs.Mount{
			{Destination: "/data", Type: "bind", Source: "/srv/data", Options: []string{"rbind", "rw"}},
			{Destination: "/dev/shm", Type: "bind", Source: "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/s0/shm", Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}},
		},
	}
	g, err := NewGuestContainer("c1", s, Pod{Role: PodContainer, SandboxID: "s0"})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Binds) != 1 || g.Binds[0].Source != "/srv/data" {
		t.Fatalf("binds = %+v, want only /srv/data (the pod's shm is the guest's)", g.Binds)
	}
	req := g.Request(GuestSetup{Pod: &PodPlacement{ShareTag: "pod", Dir: "c1", JoinContainer: "s0", Join: []string{"ipc", "uts", "pid"}}})
	if req.RootfsTag != "pod" || req.RootfsPath != "c1/rootfs" || len(req.Shares) != 0 {
		t.Errorf("root %q %q, shares %v", req.RootfsTag, req.RootfsPath, req.Shares)
	}
	if req.JoinContainerId != "s0" || strings.Join(req.JoinNamespaces, ",") != "ipc,uts,pid" || req.Hostname != "" {
		t.Errorf("join %q %v, hostname %q", req.JoinContainerId, req.JoinNamespaces, req.Hostname)
	}
	if m := req.Mounts[0]; m.Type != "bind" || m.Source != api.SharesDir+"/pod/c1/binds/0" {
		t.Errorf("bind = %v", m)
	}
	if m := req.Mounts[1]; m.Type != api.PodShmMountType || m.Destination != "/dev/shm" || strings.Join(m.Options, ",") != "nosuid,nodev,noexec" {
		t.Errorf("shm = %v", m)
	}
	// Alone, the same container has its own binds share, and the request
	// built for the pod did not change what the container holds.
	alone := g.Request(GuestSetup{})
	if alone.RootfsTag != api.RootfsTag || alone.RootfsPath != "" || alone.Mounts[0].Source != api.SharesDir+"/binds/0" ||
		len(alone.Shares) != 1 || alone.Shares[0].Tag != api.BindsTag || alone.Hostname != "pod-1" {
		t.Errorf("alone: %v", alone)
	}
	// The shm of another pod is an ordinary bind.
	if isPodShm(s.Mounts[1], "s9") {
		t.Error("another sandbox's shm taken for this pod's")
	}
}

func TestCheckPodAnnotations(t *testing.T) {
	pod := map[string]string{"io.gondolin.net.mode": "allowlist", "io.gondolin.net.allow": "example.com", "io.kubernetes.cri.sandbox-id": "s0"}
	same := map[string]string{"io.gondolin.net.mode": "allowlist", "io.kubernetes.cri.container-type": "container"}
	if err := CheckPodAnnotations(pod, same); err != nil {
		t.Errorf("a container repeating its pod's annotation: %v", err)
	}
	other := map[string]string{"io.gondolin.net.mode": "open", "io.gondolin.vm.memory": "1024"}
	err := CheckPodAnnotations(pod, other)
	if err == nil || !strings.Contains(err.Error(), "io.gondolin.net.mode, io.gondolin.vm.memory") || !strings.Contains(err.Error(), "set them on the pod") {
		t.Errorf("err = %v", err)
	}
}
