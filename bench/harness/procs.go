package harness

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Proc is one host process of a container and its proportional set size.
type Proc struct {
	PID    int
	Name   string
	PSSKiB int64
	// The PSS split: anonymous, file-backed (binaries, libraries, the
	// guest kernel and initrd QEMU keeps mapped; shared with every other
	// process mapping them), shared memory (the guest's RAM).
	AnonKiB, FileKiB, ShmemKiB int64
	// JITKiB is the part of AnonKiB in anonymous executable mappings: in
	// QEMU under TCG, its translation cache (the guest code translated to
	// host code), which a KVM host does not have.
	JITKiB int64
}

// pss is a process's proportional set size from smaps_rollup, in KiB, and
// its split: anonymous memory, file pages, and shared memory (for QEMU and
// virtiofsd, the guest's RAM, a memfd both map).
type pss struct {
	total, anon, file, shmem int64
}

// parsePSS reads a /proc/PID/smaps_rollup text. Pss is required; the
// split lines are optional (older kernels lack them).
func parsePSS(text string) (pss, error) {
	var p pss
	found := false
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		var dst *int64
		switch f[0] {
		case "Pss:":
			dst, found = &p.total, true
		case "Pss_Anon:":
			dst = &p.anon
		case "Pss_File:":
			dst = &p.file
		case "Pss_Shmem:":
			dst = &p.shmem
		default:
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return pss{}, fmt.Errorf("smaps_rollup: %q: %w", sc.Text(), err)
		}
		*dst = v
	}
	if !found {
		return pss{}, fmt.Errorf("no Pss line in smaps_rollup")
	}
	return p, nil
}

// parseJIT sums the PSS of the anonymous executable mappings in a
// /proc/PID/smaps text: mappings with an 'x' permission and no pathname
// (QEMU's TCG code buffer is one such mapping).
func parseJIT(text string) (int64, error) {
	var kib int64
	jit := false
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			// A mapping's header: range perms offset dev inode [path].
			jit = len(f) == 5 && strings.Contains(f[1], "x")
			continue
		}
		if jit && f[0] == "Pss:" && len(f) >= 2 {
			v, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("smaps: %q: %w", sc.Text(), err)
			}
			kib += v
		}
	}
	return kib, sc.Err()
}

// parseStatPPID returns the parent pid from a /proc/PID/stat text. The
// command name (field 2) may hold spaces and parentheses; the fields after
// the last ')' are state, ppid, ….
func parseStatPPID(text string) (int, error) {
	i := strings.LastIndexByte(text, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat: %q", text)
	}
	f := strings.Fields(text[i+1:])
	if len(f) < 2 {
		return 0, fmt.Errorf("malformed stat: %q", text)
	}
	return strconv.Atoi(f[1])
}

// argValue returns the argument following flag in args ("" if absent).
func argValue(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procTable is a snapshot of the host's processes: each one's parent and
// command line (nil for a kernel thread).
type procTable struct {
	ppid map[int]int
	args map[int][]string
}

// readProcTable reads /proc. Processes that vanish while it reads are
// left out.
func readProcTable() procTable {
	t := procTable{ppid: map[int]int{}, args: map[int][]string{}}
	for _, pid := range allPIDs() {
		dir := filepath.Join("/proc", strconv.Itoa(pid))
		b, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue
		}
		ppid, err := parseStatPPID(string(b))
		if err != nil {
			continue
		}
		t.ppid[pid] = ppid
		if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil && len(b) > 0 {
			t.args[pid] = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		}
	}
	return t
}

// existing returns the pids of the table's processes, in the order given.
func (t procTable) existing(pids []int) []int {
	var out []int
	for _, pid := range pids {
		if _, ok := t.ppid[pid]; ok {
			out = append(out, pid)
		}
	}
	return out
}

// descendants returns pids and every process below them, each once,
// sorted.
func (t procTable) descendants(pids []int) []int {
	children := map[int][]int{}
	for pid, ppid := range t.ppid {
		children[ppid] = append(children[ppid], pid)
	}
	seen := map[int]bool{}
	var out []int
	queue := append([]int(nil), pids...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
		queue = append(queue, children[p]...)
	}
	sort.Ints(out)
	return out
}

// shims returns the shim processes (any runtime) serving container id for
// the containerd at address: they run with "-id ID -address ADDRESS".
func (t procTable) shims(id, address string) []int {
	var out []int
	for pid, args := range t.args {
		if !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		if argValue(args, "-id") == id && argValue(args, "-address") == address {
			out = append(out, pid)
		}
	}
	sort.Ints(out)
	return out
}

// ProcsPSS reads the PSS of each process (processes that vanished are skipped).
func ProcsPSS(pids []int) []Proc {
	var out []Proc
	for _, pid := range pids {
		dir := filepath.Join("/proc", strconv.Itoa(pid))
		b, err := os.ReadFile(filepath.Join(dir, "smaps_rollup"))
		if err != nil {
			continue
		}
		p, err := parsePSS(string(b))
		if err != nil {
			continue
		}
		proc := Proc{PID: pid, Name: procName(dir), PSSKiB: p.total, AnonKiB: p.anon, FileKiB: p.file, ShmemKiB: p.shmem}
		if b, err := os.ReadFile(filepath.Join(dir, "smaps")); err == nil {
			proc.JITKiB, _ = parseJIT(string(b))
		}
		out = append(out, proc)
	}
	return out
}

// procName names a process by its argv[0] (runsc's helpers re-execute
// /proc/self/exe, so their comm is "exe" while argv[0] is runsc-sandbox or
// runsc-gofer), else by its comm.
func procName(dir string) string {
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		arg0, _, _ := strings.Cut(string(b), "\x00")
		if arg0 = filepath.Base(strings.TrimSpace(arg0)); arg0 != "" && arg0 != "." && arg0 != "/" {
			return arg0
		}
	}
	comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
	return strings.TrimSpace(string(comm))
}

// ContainerProcs returns every host process of container id in the
// containerd namespace: its shim and everything below it (runc's container
// processes; runsc's sandbox and gofer; gondolin's QEMU and virtiofsd),
// each once. With gondolin, also the VM processes the container's state
// file records and everything below them: a VM the container took from the
// VM pool is the pool process's child, not its shim's. A gondolin
// container without a state file is an error (its VM would go uncounted).
func ContainerProcs(address, namespace, id string, gondolin bool) ([]Proc, error) {
	t := readProcTable()
	roots := t.shims(id, address)
	if len(roots) == 0 {
		return nil, fmt.Errorf("no shim process found for container %s", id)
	}
	if gondolin {
		dir := gondolinStateDir(gondolinStateRoot, namespace, id)
		st, ok, err := readVMState(dir)
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", id, err)
		}
		if !ok {
			return nil, fmt.Errorf("gondolin container %s (namespace %s) has no state file in %s: the processes of its VM cannot be found", id, namespace, dir)
		}
		// Only those that still exist: a VM process that exited is no
		// part of the figure.
		roots = append(roots, t.existing(st.pids())...)
	}
	return ProcsPSS(t.descendants(roots)), nil
}

// SumPSS adds up the PSS of procs, in MiB.
func SumPSS(procs []Proc) float64 {
	var kib int64
	for _, p := range procs {
		kib += p.PSSKiB
	}
	return float64(kib) / 1024
}

// SumJIT adds up the PSS of procs' anonymous executable memory, in MiB.
func SumJIT(procs []Proc) float64 {
	var kib int64
	for _, p := range procs {
		kib += p.JITKiB
	}
	return float64(kib) / 1024
}

// DescribeProcs summarises procs by name: "qemu-system-x86 151.2 MiB, …".
func DescribeProcs(procs []Proc) string {
	type sums struct{ total, anon, file, shmem, jit int64 }
	by := map[string]*sums{}
	count := map[string]int{}
	for _, p := range procs {
		if by[p.Name] == nil {
			by[p.Name] = &sums{}
		}
		b := by[p.Name]
		b.total += p.PSSKiB
		b.anon += p.AnonKiB
		b.file += p.FileKiB
		b.shmem += p.ShmemKiB
		b.jit += p.JITKiB
		count[p.Name]++
	}
	names := make([]string, 0, len(by))
	for n := range by {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if a, b := by[names[i]].total, by[names[j]].total; a != b {
			return a > b
		}
		return names[i] < names[j] // ties in name order: a stable report
	})
	mib := func(kib int64) string { return fmt.Sprintf("%.1f", float64(kib)/1024) }
	var parts []string
	for _, n := range names {
		b := by[n]
		s := fmt.Sprintf("%s %s MiB", n, mib(b.total))
		if count[n] > 1 {
			s = fmt.Sprintf("%s (%d processes)", s, count[n])
		}
		if b.anon+b.file+b.shmem > 0 {
			jit := ""
			if b.jit > 0 {
				jit = fmt.Sprintf(" (of it executable %s)", mib(b.jit))
			}
			s += fmt.Sprintf(" [anon %s%s, file %s, shmem %s]", mib(b.anon), jit, mib(b.file), mib(b.shmem))
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}
