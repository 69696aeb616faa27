package oci

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// The annotations containerd's CRI plugin sets on the containers of a
// Kubernetes pod (containerd's internal/cri/annotations). A pod's sandbox
// (pause) container makes the pod's VM; its other containers run in that
// VM. A container without them (ctr, docker, nerdctl) is a pod of one.
const (
	AnnotationCRIContainerType = "io.kubernetes.cri.container-type"
	AnnotationCRISandboxID     = "io.kubernetes.cri.sandbox-id"
	AnnotationCRISandboxMemory = "io.kubernetes.cri.sandbox-memory"
	AnnotationCRISandboxQuota  = "io.kubernetes.cri.sandbox-cpu-quota"
	AnnotationCRISandboxPeriod = "io.kubernetes.cri.sandbox-cpu-period"

	criTypeSandbox   = "sandbox"
	criTypeContainer = "container"
)

// PodRole is a container's place in a pod.
type PodRole int

const (
	// Standalone is a container of its own: the owner of a pod of one.
	Standalone PodRole = iota
	// PodSandbox is a CRI pod's sandbox container: it makes the pod's VM.
	PodSandbox
	// PodContainer is a CRI pod's application container, run in the VM
	// its sandbox made.
	PodContainer
)

// Pod is where a container belongs.
type Pod struct {
	Role PodRole
	// SandboxID is the pod's sandbox container; "" for Standalone.
	SandboxID string
}

// ParsePod reads a container's place in a pod from the CRI annotations of
// container id.
func ParsePod(id string, ann map[string]string) (Pod, error) {
	typ, ok := ann[AnnotationCRIContainerType]
	sid := ann[AnnotationCRISandboxID]
	switch {
	case !ok:
		return Pod{Role: Standalone}, nil
	case typ == criTypeSandbox:
		if sid != "" && sid != id {
			return Pod{}, fmt.Errorf("annotation %s = %q on sandbox container %s: a sandbox's sandbox id must be its own", AnnotationCRISandboxID, sid, id)
		}
		return Pod{Role: PodSandbox, SandboxID: id}, nil
	case typ == criTypeContainer:
		if sid == "" || sid == id {
			return Pod{}, fmt.Errorf("annotation %s = %q on container %s: a pod's container needs the id of its pod's sandbox container", AnnotationCRISandboxID, sid, id)
		}
		return Pod{Role: PodContainer, SandboxID: sid}, nil
	}
	return Pod{}, fmt.Errorf("annotation %s = %q: accepted are %q and %q", AnnotationCRIContainerType, typ, criTypeSandbox, criTypeContainer)
}

// podLimits are the pod's summed limits that the kubelet gives its sandbox
// container in annotations (the sandbox's own resources are the pause
// process's), as the spec's resources that size the VM.
func podLimits(s *specs.Spec) (*specs.LinuxResources, error) {
	var r specs.LinuxResources
	num := func(key string) (int64, bool, error) {
		v, ok := s.Annotations[key]
		if !ok || v == "" {
			return 0, false, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("annotation %s = %q: not an integer", key, v)
		}
		return n, n > 0, nil
	}
	mem, ok, err := num(AnnotationCRISandboxMemory)
	if err != nil {
		return nil, err
	}
	if ok {
		r.Memory = &specs.LinuxMemory{Limit: &mem}
	}
	quota, qok, err := num(AnnotationCRISandboxQuota)
	if err != nil {
		return nil, err
	}
	period, pok, err := num(AnnotationCRISandboxPeriod)
	if err != nil {
		return nil, err
	}
	if qok && pok {
		p := uint64(period)
		r.CPU = &specs.LinuxCPU{Quota: &quota, Period: &p}
	}
	return &r, nil
}

// hostNamespaceFields name what a pod asked for when its sandbox lacks a
// namespace of the kind: a VM has no host namespaces to share.
var hostNamespaceFields = map[specs.LinuxNamespaceType]string{
	specs.NetworkNamespace: "hostNetwork",
	specs.IPCNamespace:     "hostIPC",
	specs.PIDNamespace:     "hostPID",
}

// CheckPodSandbox refuses a sandbox that asks for the host's namespaces:
// its pod would share them with the host, which a VM cannot do.
func CheckPodSandbox(s *specs.Spec) error {
	have := map[specs.LinuxNamespaceType]bool{}
	if s.Linux != nil {
		for _, ns := range s.Linux.Namespaces {
			have[ns.Type] = true
		}
	}
	for _, typ := range []specs.LinuxNamespaceType{specs.NetworkNamespace, specs.IPCNamespace, specs.PIDNamespace} {
		if !have[typ] {
			return fmt.Errorf("the pod asks for the host's %s namespace (%s: true), which a VM cannot share: run it with another runtime", typ, hostNamespaceFields[typ])
		}
	}
	return nil
}

// PodNamespaces maps the namespaces of a pod's container onto its pod's
// VM: a path into the sandbox's namespaces (containerd gives
// /proc/<task pid>/ns/<kind>, and every task of the pod has the VMM's pid)
// means the sandbox container's namespace of that kind in the guest;
// "ipc", "uts" and "pid" are joined there, the network is the VM's anyway.
// An entry without a path is a namespace of the container's own. A path to
// anything else, or a missing net, ipc or pid entry (the host's), cannot be
// had in a VM and is refused.
func PodNamespaces(s *specs.Spec, vmmPid int) (join []string, err error) {
	have := map[specs.LinuxNamespaceType]bool{}
	var nss []specs.LinuxNamespace
	if s.Linux != nil {
		nss = s.Linux.Namespaces
	}
	for _, ns := range nss {
		have[ns.Type] = true
		if ns.Path == "" {
			continue
		}
		switch ns.Type {
		case specs.NetworkNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.PIDNamespace:
		default:
			return nil, fmt.Errorf("%s namespace path %q: a container of a pod can join only its pod's network, ipc, uts and pid namespaces", ns.Type, ns.Path)
		}
		kind := guestNamespaceName(ns.Type)
		want := filepath.Join("/proc", strconv.Itoa(vmmPid), "ns", kind)
		if filepath.Clean(ns.Path) != want {
			return nil, fmt.Errorf("%s namespace path %q is not its pod's (%s): a container of a pod can join only its own pod's namespaces", ns.Type, ns.Path, want)
		}
		if ns.Type != specs.NetworkNamespace {
			join = append(join, kind)
		}
	}
	for _, typ := range []specs.LinuxNamespaceType{specs.NetworkNamespace, specs.IPCNamespace, specs.PIDNamespace} {
		if !have[typ] {
			return nil, fmt.Errorf("the container asks for the host's %s namespace (%s: true), which a VM cannot share", typ, hostNamespaceFields[typ])
		}
	}
	return join, nil
}

// guestNamespaceName is the name of a namespace kind under /proc/PID/ns
// and in the agent's join_namespaces.
func guestNamespaceName(t specs.LinuxNamespaceType) string {
	if t == specs.NetworkNamespace {
		return "net"
	}
	return string(t)
}

// isPodShm says m is CRI's bind of its pod's /dev/shm (a host tmpfs at
// .../sandboxes/<sandbox id>/shm): the guest gives the pod one of its own.
func isPodShm(m specs.Mount, sandboxID string) bool {
	if sandboxID == "" || filepath.Clean(m.Destination) != "/dev/shm" {
		return false
	}
	dir, base := filepath.Split(filepath.Clean(m.Source))
	return base == "shm" && filepath.Base(filepath.Clean(dir)) == sandboxID &&
		filepath.Base(filepath.Dir(filepath.Clean(dir))) == "sandboxes"
}

// podShmMount is the guest mount that stands for the pod's /dev/shm.
func podShmMount(m specs.Mount) *api.Mount {
	var opts []string
	for _, o := range m.Options {
		switch {
		case o == "rbind" || o == "bind" || o == "ro" || o == "rw":
			// The pod's shm is one tmpfs every container writes.
		case strings.HasPrefix(o, "size="), o == "nosuid", o == "nodev", o == "noexec":
			opts = append(opts, o)
		}
	}
	return &api.Mount{Destination: "/dev/shm", Type: api.PodShmMountType, Options: opts}
}

// CheckPodAnnotations refuses a pod's container whose io.gondolin.*
// annotations differ from its pod's: the policy, the secrets and the VM
// are the pod's, set once on the sandbox (containerd passes a pod's
// annotations to its containers too, so repeating one is fine).
func CheckPodAnnotations(pod, container map[string]string) error {
	var bad []string
	for k, v := range container {
		if !strings.HasPrefix(k, AnnotationPrefix) {
			continue
		}
		if pv, ok := pod[k]; !ok || pv != v {
			bad = append(bad, k)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	return fmt.Errorf("annotations %s differ from the pod's: the egress policy, secrets and VM are pod-wide in gondolin; set them on the pod (its sandbox)", strings.Join(bad, ", "))
}
