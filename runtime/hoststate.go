package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/earendil-works/gondolin-containerd/internal/atomicfile"
)

// A container's host-side state is everything made on the host for it that
// would outlive a shim that dies: the snapshot's rootfs mount, the shares in
// the state directory (the read-only root's overlay, the binds tmpfs), the
// pinned network namespace, the host cgroup the shim created, and the VM's
// processes. hostState is its one owner: each of them is recorded in the
// state file before (or as) it is made, nothing else writes that file, and
// its cleanup undoes whatever is recorded. The same cleanup serves a failed
// create, Delete, and `shim delete` after a crash (Cleanup, which reads the
// file back).

// persistedState is the state file. Its JSON names are read back by the
// next shim version (a container created by this one is cleaned up by
// that one) and by the integration tests: add fields, never rename one.
type persistedState struct {
	Bundle        string `json:"bundle"`
	RootfsMounted string `json:"rootfs_mounted,omitempty"`
	// BindsDir is the binds share (binds.go): a tmpfs in the state
	// directory with the container's host bind mounts, if any.
	BindsDir string `json:"binds_dir,omitempty"`
	// ReadonlyRoot is the overlay that serves a read-only root
	// (roroot.go), in the state directory, if the root is read-only.
	ReadonlyRoot string `json:"readonly_root,omitempty"`
	// NetNSPin is where a network namespace the shim created is pinned.
	NetNSPin string `json:"netns_pin,omitempty"`
	// VMMPid is the VMM's process (its JSON name is from when QEMU was
	// the only VMM: state files of running containers keep working).
	VMMPid        int   `json:"qemu_pid,omitempty"`
	VirtiofsdPids []int `json:"virtiofsd_pids,omitempty"`
	// HostCgroup is the container's host cgroup when the shim created it
	// (a path below the cgroup hierarchies' roots).
	HostCgroup string `json:"host_cgroup,omitempty"`
	// PodShare is the pod share (podshare.go) a CRI pod's sandbox made
	// in its state directory for its pod's containers.
	PodShare string `json:"pod_share,omitempty"`
	// PodEntry is a pod's container's entry in its pod's share: its root
	// and binds, bound there.
	PodEntry string `json:"pod_entry,omitempty"`
	// Members are the state directories of the other containers of the
	// pod this (sandbox) container made: its cleanup is theirs too, since
	// containerd runs no `shim delete` for them.
	Members []string `json:"members,omitempty"`
	// VMDir is the directory a VM taken from the VM pool was started in
	// (vmpool.go): its processes' command lines name it instead of this
	// state directory.
	VMDir string `json:"vm_dir,omitempty"`
}

// Names the runtime makes in a container's state directory.
const (
	stateFile        = "state.json"
	bindsName        = "binds"
	readonlyRootName = "rootfs-ro"
	netNSPinName     = "netns"
)

// hostState is the record of a container's host-side state, kept in its
// state directory.
type hostState struct {
	dir string

	mu  sync.Mutex
	rec persistedState
}

// newHostState starts the record of a container being created, after
// cleaning up whatever a shim that died left under the same name.
func newHostState(ctx context.Context, stateRoot, namespace, id, bundle string) (*hostState, error) {
	if err := Cleanup(ctx, stateRoot, namespace, id); err != nil {
		return nil, fmt.Errorf("clean stale state: %w", err)
	}
	h := &hostState{dir: StateDir(stateRoot, namespace, id), rec: persistedState{Bundle: bundle}}
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	if err := h.record(func(*persistedState) {}); err != nil {
		return nil, err
	}
	return h, nil
}

// loadHostState reads back the record in dir. Without a state file (none
// yet, or a shim that died before writing it) the shares are assumed at
// the names the runtime gives them: none should be there, but were one
// left, removing the directory would go through its mounts into host
// files.
func loadHostState(dir string) (*hostState, error) {
	h := &hostState{dir: dir}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		h.rec.BindsDir = filepath.Join(dir, bindsName)
		h.rec.ReadonlyRoot = filepath.Join(dir, readonlyRootName)
		h.rec.PodShare = filepath.Join(dir, podShareName)
		return h, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	if err := json.Unmarshal(b, &h.rec); err != nil {
		return nil, fmt.Errorf("parse state file %s: %w", filepath.Join(dir, stateFile), err)
	}
	return h, nil
}

// Cleanup removes what a container left when its shim died (`shim delete`):
// it undoes everything its state file records and removes its state
// directory. It is safe to run more than once.
func Cleanup(ctx context.Context, stateRoot, namespace, id string) error {
	h, err := loadHostState(StateDir(stateRoot, namespace, id))
	if err != nil {
		return fmt.Errorf("state of %s: %w", id, err)
	}
	return h.cleanup()
}

// path is name in the state directory.
func (h *hostState) path(name string) string {
	return filepath.Join(h.dir, name)
}

// record changes the record and writes the state file, before the caller
// makes what it recorded: a shim that dies while making it leaves a file
// that says what to undo.
func (h *hostState) record(change func(*persistedState)) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	change(&h.rec)
	b, err := json.Marshal(&h.rec)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	// No sync: the file is for a shim that dies, not a machine that does
	// (the state root is under /run), and a create writes it a dozen times.
	if err := atomicfile.WriteFileVolatile(h.path(stateFile), b, 0o600); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	return nil
}

// recordRootfs records the snapshot's mounts on target (the bundle's
// rootfs), before they are mounted.
func (h *hostState) recordRootfs(target string) error {
	return h.record(func(r *persistedState) { r.RootfsMounted = target })
}

// recordReadonlyRoot records the read-only root's overlay and returns
// where to make it.
func (h *hostState) recordReadonlyRoot() (string, error) {
	dir := h.path(readonlyRootName)
	return dir, h.record(func(r *persistedState) { r.ReadonlyRoot = dir })
}

// recordBinds records the binds share and returns where to make it.
func (h *hostState) recordBinds() (string, error) {
	dir := h.path(bindsName)
	return dir, h.record(func(r *persistedState) { r.BindsDir = dir })
}

// recordPodShare records the pod share and returns where to make it.
func (h *hostState) recordPodShare() (string, error) {
	dir := h.path(podShareName)
	return dir, h.record(func(r *persistedState) { r.PodShare = dir })
}

// recordPodEntry records the container's entry in its pod's share.
func (h *hostState) recordPodEntry(entry string) error {
	return h.record(func(r *persistedState) { r.PodEntry = entry })
}

// recordMember records a container of the pod, by its state directory,
// before anything is made for it.
func (h *hostState) recordMember(dir string) error {
	return h.record(func(r *persistedState) { r.Members = append(r.Members, dir) })
}

// dropMember forgets a container of the pod that was cleaned up.
func (h *hostState) dropMember(dir string) error {
	return h.record(func(r *persistedState) {
		r.Members = slices.DeleteFunc(r.Members, func(d string) bool { return d == dir })
	})
}

// recordNetNSPin records where a network namespace the shim creates is
// pinned, and returns it.
func (h *hostState) recordNetNSPin() (string, error) {
	pin := h.path(netNSPinName)
	return pin, h.record(func(r *persistedState) { r.NetNSPin = pin })
}

// recordHostCgroup records a host cgroup the shim created, before any
// process joins it.
func (h *hostState) recordHostCgroup(path string) error {
	return h.record(func(r *persistedState) { r.HostCgroup = path })
}

// recordFileServers records the VM's file servers, before its VMM starts.
func (h *hostState) recordFileServers(pids []int) error {
	return h.record(func(r *persistedState) { r.VirtiofsdPids = append([]int(nil), pids...) })
}

// recordPooledVM records a VM taken from the VM pool: the directory its
// processes' command lines name, its VMM and its file servers.
func (h *hostState) recordPooledVM(dir string, vmmPid int, fileServers []int) error {
	return h.record(func(r *persistedState) {
		r.VMDir, r.VMMPid, r.VirtiofsdPids = dir, vmmPid, append([]int(nil), fileServers...)
	})
}

// recordVMM records the VM's VMM process.
func (h *hostState) recordVMM(pid int) error {
	return h.record(func(r *persistedState) { r.VMMPid = pid })
}

// cleanup undoes everything recorded, in the order that works: the VM's
// processes first (the cgroup must be empty to go, and nothing may still
// serve the shares), then the cgroup, the shares, the rootfs and the
// namespace's pin, and last the state directory. Each undo runs even when
// one before it failed; the directory is kept if anything mounted in it is
// still there, since removing it would go through that mount into host
// files. It is safe to run more than once.
func (h *hostState) cleanup() error {
	var errs []error
	keepDir := false
	for _, u := range []struct {
		undo  func() error
		inDir bool
	}{
		{h.releaseVM, false},
		{h.releaseMembers, false},
		{h.releasePodEntry, false},
		{h.releasePodShare, true},
		{h.releaseHostCgroup, false},
		{h.releaseReadonlyRoot, true},
		{h.releaseRootfs, false},
		{h.releaseNetNSPin, true},
		{h.releaseBinds, true},
	} {
		if err := u.undo(); err != nil {
			errs = append(errs, err)
			keepDir = keepDir || u.inDir
		}
	}
	if keepDir {
		errs = append(errs, fmt.Errorf("state directory %s kept: a mount in it could not be removed", h.dir))
	} else if err := os.RemoveAll(h.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// release undoes one recorded path with undo and, once it is undone,
// drops it from the record (the file keeps it: every undo is harmless to
// repeat).
func (h *hostState) release(field func(*persistedState) *string, undo func(string) error) error {
	h.mu.Lock()
	path := *field(&h.rec)
	h.mu.Unlock()
	if path == "" {
		return nil
	}
	if err := undo(path); err != nil {
		return err
	}
	h.mu.Lock()
	*field(&h.rec) = ""
	h.mu.Unlock()
	return nil
}

// releaseVM kills the VM's recorded processes that are still ours.
func (h *hostState) releaseVM() error {
	h.mu.Lock()
	pids := append([]int{h.rec.VMMPid}, h.rec.VirtiofsdPids...)
	marker := h.dir
	if h.rec.VMDir != "" {
		marker = h.rec.VMDir
	}
	h.mu.Unlock()
	var errs []error
	for _, pid := range pids {
		if err := killIfOurs(pid, marker); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	h.mu.Lock()
	h.rec.VMMPid, h.rec.VirtiofsdPids = 0, nil
	h.mu.Unlock()
	return nil
}

// releaseMembers cleans up the pod's other containers, whose VM is gone.
// Only a state directory beside this one, named as the runtime names
// them, is acted on.
func (h *hostState) releaseMembers() error {
	h.mu.Lock()
	members := append([]string(nil), h.rec.Members...)
	h.mu.Unlock()
	var errs []error
	for _, dir := range members {
		if filepath.Dir(dir) != filepath.Dir(h.dir) || !isStateDirName(filepath.Base(dir)) {
			errs = append(errs, fmt.Errorf("state file of %s names member %q, not a state directory beside it: refusing to clean it", h.dir, dir))
			continue
		}
		m, err := loadHostState(dir)
		if err == nil {
			err = m.cleanup()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("clean up pod member %s: %w", dir, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	h.mu.Lock()
	h.rec.Members = nil
	h.mu.Unlock()
	return nil
}

// releasePodEntry takes the container's root and binds out of its pod's
// share. The entry must be a container's entry of a pod share in a state
// directory beside this one.
func (h *hostState) releasePodEntry() error {
	return h.release(func(r *persistedState) *string { return &r.PodEntry }, func(entry string) error {
		mounts := filepath.Dir(entry)
		podDir := filepath.Dir(mounts)
		owner := filepath.Dir(podDir)
		if filepath.Base(mounts) != podMountsName || filepath.Base(podDir) != podShareName ||
			filepath.Dir(owner) != filepath.Dir(h.dir) || !isStateDirName(filepath.Base(owner)) {
			return fmt.Errorf("state file of %s names pod entry %q, not one of a pod share beside it: refusing to unmount it", h.dir, entry)
		}
		return unpublishFromPod(entry)
	})
}

// releasePodShare detaches and removes the pod share.
func (h *hostState) releasePodShare() error {
	return h.release(func(r *persistedState) *string { return &r.PodShare }, func(path string) error {
		if err := h.stateName(path, podShareName); err != nil {
			return err
		}
		return removePodShare(path)
	})
}

// releaseHostCgroup removes the host cgroup the shim created; its
// processes must be gone.
func (h *hostState) releaseHostCgroup() error {
	return h.release(func(r *persistedState) *string { return &r.HostCgroup }, removeHostCgroup)
}

// releaseReadonlyRoot detaches and removes the read-only root's overlay.
func (h *hostState) releaseReadonlyRoot() error {
	return h.release(func(r *persistedState) *string { return &r.ReadonlyRoot }, func(path string) error {
		if err := h.stateName(path, readonlyRootName); err != nil {
			return err
		}
		return detachAndRemove(path)
	})
}

// releaseRootfs unmounts the snapshot's mounts from the bundle's rootfs.
func (h *hostState) releaseRootfs() error {
	return h.release(func(r *persistedState) *string { return &r.RootfsMounted }, unmountRootfs)
}

// releaseNetNSPin unpins a network namespace the shim created.
func (h *hostState) releaseNetNSPin() error {
	return h.release(func(r *persistedState) *string { return &r.NetNSPin }, removeNetNSPin)
}

// releaseBinds detaches and removes the binds share.
func (h *hostState) releaseBinds() error {
	return h.release(func(r *persistedState) *string { return &r.BindsDir }, func(path string) error {
		if err := h.stateName(path, bindsName); err != nil {
			return err
		}
		return removeBinds(path)
	})
}

// stateName checks that a share path read back from the state file is the
// one the runtime makes there, so cleanup never acts elsewhere. The shares
// are detached by descriptor from the state directory (mounts.go), never
// through a path the guest could have written.
func (h *hostState) stateName(path, name string) error {
	if path != h.path(name) {
		return fmt.Errorf("state file of %s names %q, not %s: refusing to unmount it", h.dir, path, h.path(name))
	}
	return nil
}

// unmountRootfs detaches the snapshot's mounts on target (the bundle's
// rootfs) with everything below them, by descriptor (mounts.go): no path
// below target, which the guest writes, is looked up.
func unmountRootfs(target string) error {
	if err := detachPath(target); err != nil {
		return fmt.Errorf("unmount rootfs %s: %w", target, err)
	}
	return nil
}

// killIfOurs kills pid only if its command line names our state directory,
// so a recycled PID is never hit.
func killIfOurs(pid int, stateDir string) error {
	if pid <= 0 {
		return nil
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte(stateDir)) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	for i := 0; i < 200; i++ {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && zombie(b) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("process %d did not exit after SIGKILL", pid)
}

func zombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}
