// Package runtime owns the life of sandboxes (one VM each), the containers
// in them and their processes: create, start, signal, wait, delete, stdio
// and exits. It knows nothing of ttrpc or containerd's task API; the shim
// maps that API onto it.
package runtime

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/earendil-works/gondolin-containerd/config"
)

// DefaultStateRoot holds one directory of sockets and state per container
// (config.DefaultStateRoot).
const DefaultStateRoot = config.DefaultStateRoot

// Exit is a process's end.
type Exit struct {
	ContainerID string
	ExecID      string
	// Pid is the process's PID as the shim reports it.
	Pid      uint32
	Status   uint32
	ExitedAt time.Time
}

// Config configures a Runtime.
type Config struct {
	Runtime *config.Config
	// ConfigPath is the file Runtime was read from ("" for the default),
	// which a VM pool the runtime starts reads too.
	ConfigPath string
	StateRoot  string
	Namespace  string
	// OnExit is called once for each process that exits, after all of its
	// output has been delivered.
	OnExit func(Exit)
	// OnOOM is called when the guest kernel OOM-kills a process of a
	// container.
	OnOOM func(containerID string)
}

// Runtime holds the containers of one shim.
type Runtime struct {
	cfg Config
	// vms is the VMM, file server and accelerator every VM starts with.
	vms        vmSetups
	mu         sync.Mutex
	containers map[string]*Container
	// pods are the CRI pods whose VMs run here, by sandbox container ID:
	// the pods their other containers join.
	pods map[string]*pod
}

// New returns an empty Runtime.
func New(cfg Config) *Runtime {
	if cfg.StateRoot == "" {
		cfg.StateRoot = DefaultStateRoot
	}
	if cfg.OnExit == nil {
		cfg.OnExit = func(Exit) {}
	}
	if cfg.OnOOM == nil {
		cfg.OnOOM = func(string) {}
	}
	return &Runtime{cfg: cfg, vms: vmSetups{cfg: cfg.Runtime}, containers: map[string]*Container{}, pods: map[string]*pod{}}
}

// Get returns the container with id.
func (r *Runtime) Get(id string) (*Container, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

// Len is the number of containers.
func (r *Runtime) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.containers)
}

// addPod makes a CRI pod's VM one that its containers can join.
func (r *Runtime) addPod(p *pod) {
	if p.shareDir == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pods[p.id] = p
}

// removePod forgets a pod whose VM is going.
func (r *Runtime) removePod(p *pod) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pods[p.id] == p {
		delete(r.pods, p.id)
	}
}

// podOf is the running pod of sandbox sandboxID, which container id joins.
func (r *Runtime) podOf(id, sandboxID string) (*pod, error) {
	r.mu.Lock()
	p, ok := r.pods[sandboxID]
	r.mu.Unlock()
	if !ok || p.stopped() {
		return nil, fmt.Errorf("container %s belongs to pod sandbox %s, which does not run in this shim (its sandbox must be created with the gondolin runtime, and still run): %w", id, sandboxID, errdefs.ErrFailedPrecondition)
	}
	return p, nil
}

func (r *Runtime) remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.containers, id)
}

// StateDir is a container's state directory. It is named by a hash so that
// socket paths in it stay far below the 108-byte limit whatever the ID.
func StateDir(root, namespace, id string) string {
	sum := sha256.Sum256([]byte(namespace + "\x00" + id))
	return filepath.Join(root, hex.EncodeToString(sum[:stateDirHashBytes]))
}

// stateDirHashBytes is how much of the hash names a state directory.
const stateDirHashBytes = 8

// isStateDirName says name is what StateDir names a state directory.
func isStateDirName(name string) bool {
	b, err := hex.DecodeString(name)
	return err == nil && len(b) == stateDirHashBytes && hex.EncodeToString(b) == name
}
