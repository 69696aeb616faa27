package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Gondolin's VM processes. A container's QEMU and virtiofsd are below its
// shim unless its VM came from the VM pool (runtime/vmpool.go): then they
// are children of the pool process, which started them ahead of the
// create and handed them over, and only the container's state file names
// them. The pool's other children are its idle VMs, which every pooled
// create relies on: what they cost is part of what the runtime costs
// (issue 18: "idle pool VMs count in the memory figures").

// gondolinStateRoot is the shim's state root (config.DefaultStateRoot:
// containerd gives the shim no other; a pool names its own with
// --state-root).
const gondolinStateRoot = "/run/gondolin"

// gondolinStateDir is the state directory of container id of namespace
// under root: the first 8 bytes of sha256(namespace NUL id), in hex. It
// must stay what runtime.StateDir (runtime/runtime.go) computes; the bench
// module does not import the runtime.
func gondolinStateDir(root, namespace, id string) string {
	sum := sha256.Sum256([]byte(namespace + "\x00" + id))
	return filepath.Join(root, hex.EncodeToString(sum[:8]))
}

// isGondolinStateDirName says name is one gondolinStateDir gives (the
// state root also holds vm-pool/ and ca/).
func isGondolinStateDirName(name string) bool {
	b, err := hex.DecodeString(name)
	return err == nil && len(b) == 8 && hex.EncodeToString(b) == name
}

// gondolinStateFile is a container's state file in its state directory.
const gondolinStateFile = "state.json"

// vmState is what the bench reads of a gondolin container's state file
// (runtime/hoststate.go persistedState): its VM's processes.
type vmState struct {
	// VMMPid is QEMU (0 before the shim started or adopted it).
	VMMPid        int   `json:"qemu_pid"`
	VirtiofsdPids []int `json:"virtiofsd_pids"`
	// VMDir is set for a VM taken from the pool: the directory the pool
	// started it in.
	VMDir string `json:"vm_dir"`
}

// parseVMState parses a state file. A pid that cannot be one is an error.
func parseVMState(b []byte) (vmState, error) {
	var st vmState
	if err := json.Unmarshal(b, &st); err != nil {
		return vmState{}, err
	}
	if st.VMMPid < 0 {
		return vmState{}, fmt.Errorf("qemu_pid %d: a pid is positive (0: none)", st.VMMPid)
	}
	for _, pid := range st.VirtiofsdPids {
		if pid <= 0 {
			return vmState{}, fmt.Errorf("virtiofsd_pids %v: a pid is positive", st.VirtiofsdPids)
		}
	}
	return st, nil
}

// pids are the VM's recorded processes.
func (st vmState) pids() []int {
	var out []int
	if st.VMMPid > 0 {
		out = append(out, st.VMMPid)
	}
	return append(out, st.VirtiofsdPids...)
}

// readVMState reads the state file in dir; ok is false when there is none
// (the container is gone, or it is no gondolin container).
func readVMState(dir string) (st vmState, ok bool, err error) {
	path := filepath.Join(dir, gondolinStateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return vmState{}, false, nil
	}
	if err != nil {
		return vmState{}, false, err
	}
	if st, err = parseVMState(b); err != nil {
		return vmState{}, false, fmt.Errorf("state file %s: %w", path, err)
	}
	return st, true, nil
}

// recordedVMPIDs returns the VM processes that the state files of all
// containers under root record (of any namespace and containerd): the VMs
// handed over, which are no pool's anymore.
func recordedVMPIDs(root string) ([]int, error) {
	ents, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		if !e.IsDir() || !isGondolinStateDirName(e.Name()) {
			continue
		}
		st, ok, err := readVMState(filepath.Join(root, e.Name()))
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, st.pids()...)
		}
	}
	return out, nil
}

// vmPoolCommand is the shim's argument that runs a VM pool
// (runtime.VMPoolCommand).
const vmPoolCommand = "vm-pool"

// flagValue returns the value of flag name in args as Go's flag package
// reads it (-name V, --name V, -name=V, --name=V), and whether it is
// there.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		for _, prefix := range []string{"-", "--"} {
			if a == prefix+name && i+1 < len(args) {
				return args[i+1], true
			}
			if v, ok := strings.CutPrefix(a, prefix+name+"="); ok {
				return v, true
			}
		}
	}
	return "", false
}

// vmPoolServes says whether args, a process's command line, is a VM pool
// (`SHIM vm-pool --socket S --state-root R [--config PATH] [--shape …]`)
// of the runtime config configPath: the shim passes --config only when it
// was given a runtime config, so "" (the built-in config) matches a pool
// without one. Which shim binary it is, is for the caller to check.
func vmPoolServes(args []string, configPath string) bool {
	if len(args) < 2 || args[1] != vmPoolCommand {
		return false
	}
	got, has := flagValue(args[2:], "config")
	if configPath == "" {
		return !has
	}
	return has && filepath.Clean(got) == filepath.Clean(configPath)
}

// poolStateRoot is the state root a pool's command line names.
func poolStateRoot(args []string) string {
	if v, ok := flagValue(args[2:], "state-root"); ok && v != "" {
		return v
	}
	return gondolinStateRoot
}

// idlePoolPIDs returns the pools and every process below them but the
// recorded VM processes (handed over to containers) and what is below
// those: the pool processes themselves and their idle VMs (and one being
// started).
func (t procTable) idlePoolPIDs(pools, recorded []int) []int {
	isPool := map[int]bool{}
	for _, p := range pools {
		isPool[p] = true
	}
	handed := map[int]bool{}
	for _, p := range t.descendants(t.existing(recorded)) {
		handed[p] = !isPool[p]
	}
	var out []int
	for _, p := range t.descendants(pools) {
		if !handed[p] {
			out = append(out, p)
		}
	}
	return out
}

// VMPoolProcs returns the VM pools that the gondolin shim binary shim runs
// for the runtime config configPath ("" the built-in config), and the
// processes that count as theirs: each pool process and everything below
// it that no container's state file records (its idle VMs). No pool is no
// error: the config may have it off, or the shim be one without a pool.
func VMPoolProcs(shim, configPath string) (pools []int, procs []Proc, err error) {
	if shim == "" {
		return nil, nil, errors.New("no shim binary given: a VM pool is found by the binary it runs")
	}
	want, err := os.Stat(shim)
	if err != nil {
		return nil, nil, fmt.Errorf("the shim binary whose VM pool to measure: %w", err)
	}
	t := readProcTable()
	roots := map[string]bool{}
	for pid, args := range t.args {
		if !vmPoolServes(args, configPath) {
			continue
		}
		// The pool of this very binary: another build's (the
		// baseline's, the integration suite's) with the same config
		// is another pool.
		exe, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
		if err != nil || !os.SameFile(exe, want) {
			continue
		}
		pools = append(pools, pid)
		roots[poolStateRoot(args)] = true
	}
	if len(pools) == 0 {
		return nil, nil, nil
	}
	sort.Ints(pools)
	var recorded []int
	for root := range roots {
		r, err := recordedVMPIDs(root)
		if err != nil {
			return nil, nil, fmt.Errorf("the VMs containers took from the pool: %w", err)
		}
		recorded = append(recorded, r...)
	}
	return pools, ProcsPSS(t.idlePoolPIDs(pools, recorded)), nil
}

// withoutProcs returns procs less those whose pid is in counted: a process
// is counted once.
func withoutProcs(procs, counted []Proc) []Proc {
	seen := map[int]bool{}
	for _, p := range counted {
		seen[p.PID] = true
	}
	var out []Proc
	for _, p := range procs {
		if !seen[p.PID] {
			out = append(out, p)
		}
	}
	return out
}

// describePool says what of the VM pool a memory figure includes.
func describePool(pools []int, procs []Proc) string {
	if len(pools) == 0 {
		return "no VM pool: no pool process of this shim binary runs for this runtime config (the pool is off, or this shim has none)"
	}
	isPool := map[int]bool{}
	for _, p := range pools {
		isPool[p] = true
	}
	var own, vms []Proc
	for _, p := range procs {
		if isPool[p.PID] {
			own = append(own, p)
		} else {
			vms = append(vms, p)
		}
	}
	plural := func(n int, what string) string {
		if n == 1 {
			return fmt.Sprintf("1 %s", what)
		}
		return fmt.Sprintf("%d %ses", n, what)
	}
	return fmt.Sprintf("incl. VM pool: %s, %.1f MiB (%s %.1f MiB, its idle VMs: %s %.1f MiB)",
		plural(len(procs), "process"), SumPSS(procs), plural(len(own), "pool process"), SumPSS(own), plural(len(vms), "process"), SumPSS(vms))
}
