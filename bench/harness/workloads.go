package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/earendil-works/gondolin-containerd/bench/report"
)

const mib = 1 << 20

// HumanBytes prints a byte count as "1 GiB", "512 MiB", "64 KiB" or "100 B".
func HumanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= mib && n%mib == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func mibPerSec(bytes int64, d time.Duration) (float64, error) {
	if d <= 0 {
		return 0, fmt.Errorf("non-positive duration %v", d)
	}
	return float64(bytes) / mib / d.Seconds(), nil
}

// --- start ------------------------------------------------------------------------------

func (s *Session) workStart(ctx context.Context) error {
	mTrue := s.metric("start_true", "start", "start to exit of `true` (ctr run --rm)", "start → exit of true", "s", report.LowerIsBetter)
	mFirst := s.metric("start_first_line", "start", "start to first output line (ctr run --rm … echo)", "start → first output line", "s", report.LowerIsBetter)
	for i := 0; i < s.Opts.Runs; i++ {
		for _, rt := range rotate(s.runtimes, i) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !try(mTrue, rt) {
				continue
			}
			id := s.newID(rt.Name(), "true", i)
			res, err := s.Ctr.Run(ctx, RunSpec{ID: id, Runtime: rt, Image: s.Image, Args: []string{"true"}, Timeout: 3 * time.Minute})
			var v float64
			if err == nil {
				v = res.Exit.Seconds()
			}
			s.record(rt, []*report.Metric{mTrue}, []float64{v}, err)
			s.addStartRun(rt, mTrue, id, v, err)
		}
		for _, rt := range rotate(s.runtimes, i) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !try(mFirst, rt) {
				continue
			}
			id := s.newID(rt.Name(), "echo", i)
			res, err := s.Ctr.Run(ctx, RunSpec{ID: id, Runtime: rt, Image: s.Image, Args: []string{"echo", "@@first"}, Timeout: 3 * time.Minute})
			var v float64
			if err == nil {
				var at time.Duration
				if at, _, err = res.Marker("first"); err == nil {
					v = at.Seconds()
				}
			}
			s.record(rt, []*report.Metric{mFirst}, []float64{v}, err)
			s.addStartRun(rt, mFirst, id, v, err)
		}
	}
	return nil
}

// addStartRun keeps a measured run of a start figure (seconds) under a
// runtime whose shim logs the steps of a start, for the start phases
// (collectStartPhases reads them from containerd's log at the end).
func (s *Session) addStartRun(rt *Runtime, m *report.Metric, id string, seconds float64, err error) {
	if err != nil || !rt.LogsPhases() {
		return
	}
	s.startRuns = append(s.startRuns, &report.StartRun{Metric: m.ID, Runtime: rt.Name(), Container: id, TotalMs: seconds * 1000})
}

// --- exec -------------------------------------------------------------------------------

// startIdle starts a detached container running `sleep` and returns its id.
func (s *Session) startIdle(ctx context.Context, rt *Runtime, job string, i int) (string, error) {
	id := s.newID(rt.Name(), job, i)
	_, err := s.Ctr.Run(ctx, RunSpec{ID: id, Runtime: rt, Image: s.Image, Args: []string{"sleep", "1000000"}, Detach: true, Timeout: 3 * time.Minute})
	if err != nil {
		return "", fmt.Errorf("starting an idle container: %w", err)
	}
	return id, nil
}

func (s *Session) workExec(ctx context.Context) error {
	m := s.metric("exec_true", "exec", "exec latency: `ctr task exec … true` into a running container", "exec latency", "s", report.LowerIsBetter)
	ids := map[string]string{}
	defer func() {
		for _, id := range ids {
			s.Ctr.Remove(id)
		}
	}()
	for _, rt := range s.runtimes {
		if !try(m, rt) {
			continue
		}
		id, err := s.startIdle(ctx, rt, "exec", 0)
		if err != nil {
			s.record(rt, []*report.Metric{m}, nil, err)
			continue
		}
		ids[rt.Name()] = id
	}
	for i := 0; i < s.Opts.Runs; i++ {
		for _, rt := range rotate(s.runtimes, i) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			id, ok := ids[rt.Name()]
			if !ok || !try(m, rt) {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			cmd := s.Ctr.Command(cctx, "tasks", "exec", "--exec-id", fmt.Sprintf("exec%d", i), id, "true")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			start := time.Now()
			err := cmd.Run()
			d := time.Since(start)
			if err != nil {
				err = cmdError("ctr tasks exec", err, cctx, stderr.String())
			}
			cancel()
			s.record(rt, []*report.Metric{m}, []float64{d.Seconds()}, err)
		}
	}
	return nil
}

// --- stdio ------------------------------------------------------------------------------

func (s *Session) workStdio(ctx context.Context) error {
	n := s.Opts.StdioBytes
	size := HumanBytes(n)
	mOut := s.metric("stdout_throughput", "stdio", fmt.Sprintf("stdout throughput: %s from `dd` in the container to ctr", size), "stdout throughput", "MiB/s", report.HigherIsBetter)
	mIn := s.metric("stdin_throughput", "stdio", fmt.Sprintf("stdin throughput: %s from ctr to `dd` in the container", size), "stdin throughput", "MiB/s", report.HigherIsBetter)
	mPipe := s.metric("pipe_throughput", "stdio", fmt.Sprintf("in-container pipe: %s from `dd` to `cat` inside the container (no stdio transport: the floor for stdout/stdin)", size), "in-container pipe", "MiB/s", report.HigherIsBetter)
	timeout := 5*time.Minute + time.Duration(n/mib)*time.Second
	jobs := []struct {
		m    *report.Metric
		once func(context.Context, *Runtime, int, int64, time.Duration) (float64, error)
	}{{mOut, s.stdoutOnce}, {mIn, s.stdinOnce}, {mPipe, s.pipeOnce}}
	for i := 0; i < s.Opts.IORuns; i++ {
		for _, job := range jobs {
			for _, rt := range rotate(s.runtimes, i) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if !try(job.m, rt) {
					continue
				}
				v, err := job.once(ctx, rt, i, n, timeout)
				s.record(rt, []*report.Metric{job.m}, []float64{v}, err)
			}
		}
	}
	return nil
}

// pipeOnce: the container prints @@go, pipes n bytes from dd to cat within
// itself and prints @@done; the clock runs between the two lines. The bytes
// never leave the container, so under gondolin this is what the guest's
// emulated CPU and kernel cost for moving them at all: stdout and stdin
// cannot be faster than that.
func (s *Session) pipeOnce(ctx context.Context, rt *Runtime, i int, n int64, timeout time.Duration) (float64, error) {
	// pipefail: a dd that failed must not leave a @@done that times nothing.
	script := fmt.Sprintf("set -e -o pipefail; echo @@go; dd if=/dev/zero bs=1M count=%d 2>/dev/null | cat >/dev/null; echo @@done", n/mib)
	res, err := s.Ctr.Run(ctx, RunSpec{
		ID: s.newID(rt.Name(), "pipe", i), Runtime: rt, Image: s.Image, Args: []string{"sh", "-c", script},
		Timeout: timeout, Stall: 2 * time.Minute,
	})
	if err != nil {
		return 0, err
	}
	return pipeFigure(res, n)
}

// pipeFigure is the MiB/s of n bytes between a run's @@go and @@done lines.
func pipeFigure(res *RunResult, n int64) (float64, error) {
	at, err := markerTimes(res, "go", "done")
	if err != nil {
		return 0, err
	}
	return mibPerSec(n, at["done"]-at["go"])
}

// stdoutOnce: the container prints @@ready, then n bytes; the clock runs from
// the @@ready line to the n-th byte arriving at ctr's standard output.
func (s *Session) stdoutOnce(ctx context.Context, rt *Runtime, i int, n int64, timeout time.Duration) (float64, error) {
	var t1, t2 time.Time
	var got int64
	script := fmt.Sprintf("echo @@ready; exec dd if=/dev/zero bs=1M count=%d 2>/dev/null", n/mib)
	_, err := s.Ctr.Run(ctx, RunSpec{
		ID: s.newID(rt.Name(), "stdout", i), Runtime: rt, Image: s.Image, Args: []string{"sh", "-c", script},
		Timeout: timeout, Stall: 2 * time.Minute,
		Stdout: func(r io.Reader, _ time.Time, progress func()) error {
			br := bufio.NewReaderSize(r, mib)
			line, err := br.ReadString('\n')
			if err != nil {
				return fmt.Errorf("no @@ready line (%v)", err)
			}
			if strings.TrimSpace(line) != "@@ready" {
				return fmt.Errorf("expected @@ready, got %q", line)
			}
			progress()
			t1 = time.Now()
			buf := make([]byte, mib)
			for got < n {
				k, err := br.Read(buf)
				got += int64(k)
				progress()
				if err != nil {
					return fmt.Errorf("output ended after %d of %d bytes (%v)", got, n, err)
				}
			}
			t2 = time.Now()
			return nil
		},
	})
	if err != nil {
		return 0, err
	}
	return mibPerSec(n, t2.Sub(t1))
}

// stdinOnce: the container prints @@ready, reads n bytes with dd and prints
// @@done; the clock runs from the first write to the @@done line.
func (s *Session) stdinOnce(ctx context.Context, rt *Runtime, i int, n int64, timeout time.Duration) (float64, error) {
	var t1, t2 time.Time
	ready, done := make(chan struct{}), make(chan struct{})
	var readyOnce, doneOnce sync.Once
	script := fmt.Sprintf("echo @@ready; dd of=/dev/null bs=1M count=%d iflag=fullblock 2>/dev/null; echo @@done", n/mib)
	_, err := s.Ctr.Run(ctx, RunSpec{
		ID: s.newID(rt.Name(), "stdin", i), Runtime: rt, Image: s.Image, Args: []string{"sh", "-c", script},
		Timeout: timeout, Stall: 2 * time.Minute,
		OnLine: func(l Line) {
			switch l.Text {
			case "@@ready":
				readyOnce.Do(func() { close(ready) })
			case "@@done":
				t2 = time.Now()
				doneOnce.Do(func() { close(done) })
			}
		},
		Stdin: func(ctx context.Context, w io.WriteCloser, progress func()) error {
			defer w.Close()
			select {
			case <-ready:
			case <-ctx.Done():
				return errors.New("the container never printed @@ready")
			}
			t1 = time.Now()
			buf := make([]byte, mib)
			for sent := int64(0); sent < n; {
				k, err := w.Write(buf[:min(int64(len(buf)), n-sent)])
				sent += int64(k)
				progress()
				if err != nil {
					return fmt.Errorf("after %d of %d bytes: %w", sent, n, err)
				}
			}
			select {
			case <-done:
				return nil
			case <-ctx.Done():
				return errors.New("all bytes written but the container never printed @@done")
			}
		},
	})
	if err != nil {
		return 0, err
	}
	return mibPerSec(n, t2.Sub(t1))
}

// --- rootfs and bind-mount I/O ----------------------------------------------------------

// treeScript is the tree part of the file jobs, in directory $D (which it
// deletes): unpack the small files, list them, delete them; a marker line
// before and after each step (treeFigures reads them).
const treeScript = `echo @@tree
tar -xf ` + TreeTarPath + ` -C "$D"
echo @@untar
n=$(find "$D" | wc -l)
echo "@@find $n"
rm -rf "$D"
echo @@rm
`

// ioScript runs the file jobs in directory $1, reading file $2 (cold), writing
// $3 MiB; a marker line after each step.
const ioScript = `set -e
D=$1; R=$2; MB=$3
mkdir -p "$D"
echo @@go
dd if="$R" of=/dev/null bs=1M 2>/dev/null
echo @@read
dd if=/dev/zero of="$D/write.bin" bs=1M count="$MB" conv=fsync 2>/dev/null
echo @@write
rm -f "$D/write.bin"
sync
` + treeScript

// tmpfsScript runs the tree part alone in directory $1, below the tmpfs
// (the directory, not the mount point itself, which rm -rf cannot remove).
const tmpfsScript = `set -e
D=$1
mkdir -p "$D"
` + treeScript

// dropFromPageCache evicts a file's pages from the host page cache
// (posix_fadvise DONTNEED), so the next read comes from the disk, for the
// file alone (no global drop_caches).
func dropFromPageCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	const fadvDontNeed = 4
	if _, _, e := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, fadvDontNeed, 0, 0); e != 0 {
		return e
	}
	return nil
}

// ensureFile makes path a file of size bytes of the bench's random data.
func ensureFile(path string, size int64) error {
	if st, err := os.Stat(path); err == nil && st.Size() == size {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	if err := WriteRandomFile(f, size); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

func (s *Session) workIO(ctx context.Context, kind string) error {
	size := HumanBytes(s.Opts.FileBytes)
	where, group := "rootfs", "rootfs I/O (the container's root file system)"
	if kind == "bind" {
		where, group = "bind mount", "bind-mount I/O (a host directory mounted into the container)"
	}
	mRead := s.metric(kind+"_seq_read", group, fmt.Sprintf("%s: sequential read of a %s file, cold host page cache", where, size), where+" seq. read", "MiB/s", report.HigherIsBetter)
	mWrite := s.metric(kind+"_seq_write", group, fmt.Sprintf("%s: sequential write of a %s file (dd conv=fsync)", where, size), where+" seq. write", "MiB/s", report.HigherIsBetter)
	ms := append([]*report.Metric{mRead, mWrite}, s.treeMetrics(kind, group, where)...)

	bindDir := filepath.Join(s.Opts.WorkDir, "bind")
	hostRead := filepath.Join(bindDir, "read.bin")
	if kind == "bind" {
		if err := ensureFile(hostRead, s.Opts.FileBytes); err != nil {
			return fmt.Errorf("preparing %s: %w", hostRead, err)
		}
	}
	for i := 0; i < s.Opts.IORuns; i++ {
		for _, rt := range rotate(s.runtimes, i) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !try(mRead, rt) {
				continue
			}
			id := s.newID(rt.Name(), kind, i)
			var args, flags, cold []string
			if kind == "bind" {
				flags = []string{"--mount", "type=bind,src=" + bindDir + ",dst=/data,options=rbind:rw"}
				args = []string{"/data/w-" + id, "/data/read.bin"}
				cold = []string{hostRead}
			} else {
				args = []string{ScratchDir + "/w", ReadFilePath}
				cold = SnapshotFiles(s.Opts.ContainerdRoot, ReadFilePath)
			}
			for _, f := range cold {
				if err := dropFromPageCache(f); err != nil {
					s.logf("warning: could not drop %s from the page cache: %v", f, err)
				}
			}
			args = append(args, strconv.FormatInt(s.Opts.FileBytes/mib, 10))
			res, err := s.Ctr.Run(ctx, RunSpec{
				ID: id, Runtime: rt, Image: s.Image, Flags: flags,
				Args:    append([]string{"sh", "-c", ioScript, "sh"}, args...),
				Timeout: 30 * time.Minute, Stall: 10 * time.Minute,
			})
			vals := make([]float64, 5)
			if err == nil {
				vals, err = ioFigures(res, s.Opts.FileBytes, TreeEntries(s.Opts.TreeFiles))
			}
			if kind == "bind" {
				_ = os.RemoveAll(filepath.Join(bindDir, "w-"+id))
			}
			s.record(rt, ms, vals, err)
		}
	}
	return nil
}

// treeMetrics registers the three figures of the tree job (untar, find,
// rm -rf) of the file jobs of kind, in the order treeFigures returns them.
func (s *Session) treeMetrics(kind, group, where string) []*report.Metric {
	return []*report.Metric{
		s.metric(kind+"_untar", group, fmt.Sprintf("%s: unpack a tree of %d small files (tar x)", where, s.Opts.TreeFiles), where+" untar small files", "s", report.LowerIsBetter),
		s.metric(kind+"_find", group, fmt.Sprintf("%s: find over those %d files", where, s.Opts.TreeFiles), where+" find", "s", report.LowerIsBetter),
		s.metric(kind+"_rm", group, fmt.Sprintf("%s: delete the tree (rm -rf)", where), where+" rm -rf tree", "s", report.LowerIsBetter),
	}
}

// ioFigures turns the marker times of one ioScript run into read MiB/s,
// write MiB/s, untar s, find s and rm s.
func ioFigures(res *RunResult, fileBytes int64, wantEntries int) ([]float64, error) {
	at, err := markerTimes(res, "go", "read", "write")
	if err != nil {
		return nil, err
	}
	tree, err := treeFigures(res, wantEntries)
	if err != nil {
		return nil, err
	}
	read, err := mibPerSec(fileBytes, at["read"]-at["go"])
	if err != nil {
		return nil, err
	}
	write, err := mibPerSec(fileBytes, at["write"]-at["read"])
	if err != nil {
		return nil, err
	}
	return append([]float64{read, write}, tree...), nil
}

// treeFigures turns the marker times of one treeScript run into untar s,
// find s and rm s, checking that find listed wantEntries paths.
func treeFigures(res *RunResult, wantEntries int) ([]float64, error) {
	at, err := markerTimes(res, "tree", "untar", "find", "rm")
	if err != nil {
		return nil, err
	}
	_, arg, _ := res.Marker("find")
	if n, err := strconv.Atoi(arg); err != nil || n != wantEntries {
		return nil, fmt.Errorf("find listed %q entries, want %d", arg, wantEntries)
	}
	return []float64{(at["untar"] - at["tree"]).Seconds(), (at["find"] - at["untar"]).Seconds(), (at["rm"] - at["find"]).Seconds()}, nil
}

// markerTimes returns when each named marker line arrived, or the error
// naming the first one missing.
func markerTimes(res *RunResult, names ...string) (map[string]time.Duration, error) {
	at := make(map[string]time.Duration, len(names))
	for _, name := range names {
		t, _, err := res.Marker(name)
		if err != nil {
			return nil, err
		}
		at[name] = t
	}
	return at, nil
}

// --- tmpfs I/O --------------------------------------------------------------------------

// tmpfsSize bounds the tmpfs of the tmpfs workload: the full tree (10 000
// files of at most 2 KiB, a page each) takes about 40 MiB.
const tmpfsSize = "256m"

// workTmpfs runs the tree job of the file jobs in a tmpfs mounted into the
// container. For gondolin that tmpfs is the guest kernel's own memory, no
// virtio-fs in the way: what is left is the emulated CPU running tar, find
// and rm and the guest kernel under them, the floor no file sharing
// transport can beat under TCG, beside the rootfs and bind-mount figures.
func (s *Session) workTmpfs(ctx context.Context) error {
	ms := s.treeMetrics("tmpfs", "tmpfs I/O (a tmpfs in the container: for gondolin the guest's own memory, no virtio-fs: the floor the emulated CPU sets for the same jobs)", "tmpfs")
	flags := []string{"--mount", "type=tmpfs,src=tmpfs,dst=/data,options=size=" + tmpfsSize}
	for i := 0; i < s.Opts.IORuns; i++ {
		for _, rt := range rotate(s.runtimes, i) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !try(ms[0], rt) {
				continue
			}
			res, err := s.Ctr.Run(ctx, RunSpec{
				ID: s.newID(rt.Name(), "tmpfs", i), Runtime: rt, Image: s.Image, Flags: flags,
				Args:    []string{"sh", "-c", tmpfsScript, "sh", "/data/tree"},
				Timeout: 30 * time.Minute, Stall: 10 * time.Minute,
			})
			vals := make([]float64, len(ms))
			if err == nil {
				vals, err = treeFigures(res, TreeEntries(s.Opts.TreeFiles))
			}
			s.record(rt, ms, vals, err)
		}
	}
	return nil
}

// --- downloads --------------------------------------------------------------------------

// DownloadKind is one of the download workloads: what the container fetches
// from the bench server and how gondolin's egress policy carries it.
type DownloadKind string

const (
	// DownloadHTTPS: HTTPS, which gondolin's policy terminates (a leaf of
	// its CA to the guest), checks and re-originates (net.allow).
	DownloadHTTPS DownloadKind = "https"
	// DownloadHTTPSRelay: the same HTTPS download with the policy only
	// relaying TCP (net.tcp-allow): the guest's TLS goes to the server end
	// to end, so the policy's own cost shows apart from the guest's TLS.
	DownloadHTTPSRelay DownloadKind = "https-relay"
	// DownloadHTTP: plain HTTP through the policy's HTTP proxy (net.allow).
	DownloadHTTP DownloadKind = "http"
)

// downloadMetric is the metric id of a download kind.
func downloadMetric(kind DownloadKind) string {
	switch kind {
	case DownloadHTTPSRelay:
		return "https_relay_download"
	case DownloadHTTP:
		return "http_download"
	}
	return "https_download"
}

func (s *Session) workDownload(ctx context.Context, kind DownloadKind) error {
	n := s.Opts.DownloadBytes
	size := HumanBytes(n)
	var m *report.Metric
	switch kind {
	case DownloadHTTPS:
		m = s.metric(downloadMetric(kind), "network",
			fmt.Sprintf("HTTPS download of %s from a server on the host (containers on host networking; gondolin through its egress policy, which terminates and re-originates TLS)", size),
			"HTTPS download", "MiB/s", report.HigherIsBetter)
		m.ReferenceName = "the same client run directly on the host"
	case DownloadHTTPSRelay:
		m = s.metric(downloadMetric(kind), "network",
			fmt.Sprintf("HTTPS download of %s, the egress policy only relaying TCP (gondolin: net.tcp-allow, the guest's TLS end to end; runtimes without a policy: see the HTTPS row)", size),
			"HTTPS download, TCP relay", "MiB/s", report.HigherIsBetter)
		m.ReferenceName = "the same HTTPS client run directly on the host"
	case DownloadHTTP:
		m = s.metric(downloadMetric(kind), "network",
			fmt.Sprintf("plain HTTP download of %s from a server on the host (gondolin through its egress policy's HTTP proxy)", size),
			"HTTP download", "MiB/s", report.HigherIsBetter)
		m.ReferenceName = "the same client run directly on the host"
	default:
		return fmt.Errorf("unknown download kind %q (https, https-relay, http)", kind)
	}
	if m.Reference == nil {
		m.Reference = &report.Figure{Accelerator: "native"}
	}
	ip, err := HostIP()
	if err != nil {
		return err
	}
	srv, err := StartHTTPSServer(ip)
	if err != nil {
		return err
	}
	defer srv.Close()
	url := srv.URL(n)
	if kind == DownloadHTTP {
		url = srv.HTTPURL(n)
	}
	s.logf("  serving %s", url)
	participants := []*Runtime{nil} // nil: the host
	for _, rt := range s.runtimes {
		if kind == DownloadHTTPSRelay && !rt.Egress {
			// Without a policy there is nothing to relay: the figure
			// would repeat its HTTPS row.
			f := m.Results[rt.Name()]
			f.Status = report.StatusSkipped
			f.Note = "no egress policy: its HTTPS row is the same download"
			continue
		}
		participants = append(participants, rt)
	}
	for i := 0; i < s.Opts.IORuns; i++ {
		for _, rt := range rotate(participants, i) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if rt == nil {
				v, err := s.hostFetch(ctx, url, n)
				if err != nil {
					m.Reference.Errors = append(m.Reference.Errors, err.Error())
					s.logf("  %-9s %s: error: %v", "host", m.ID, err)
				} else {
					m.Reference.Samples = append(m.Reference.Samples, v)
					s.logf("  %-9s %s %s MiB/s", "host", m.ID, report.FormatNumber(v))
				}
				continue
			}
			if !try(m, rt) {
				continue
			}
			flags, err := rt.NetFlags(srv, kind)
			if err != nil {
				s.record(rt, []*report.Metric{m}, []float64{0}, err)
				continue
			}
			res, err := s.Ctr.Run(ctx, RunSpec{
				ID: s.newID(rt.Name(), string(kind), i), Runtime: rt, Image: s.Image,
				Flags: flags, Args: []string{FetchPath, url},
				Timeout: 10*time.Minute + time.Duration(n/mib)*time.Second, Stall: 2 * time.Minute,
			})
			var v float64
			if err == nil {
				v, err = fetchFigure(res.Lines, res.Stderr, n)
			}
			s.record(rt, []*report.Metric{m}, []float64{v}, err)
		}
	}
	return nil
}

// fetchFigure computes MiB/s from bench-fetch's @@start and @@done lines.
func fetchFigure(lines []Line, stderr string, n int64) (float64, error) {
	r := &RunResult{Lines: lines, Stderr: stderr}
	t1, _, err := r.Marker("start")
	if err != nil {
		return 0, err
	}
	t2, arg, err := r.Marker("done")
	if err != nil {
		return 0, err
	}
	if f := strings.Fields(arg); len(f) < 1 || f[0] != strconv.FormatInt(n, 10) {
		return 0, fmt.Errorf("bench-fetch reported %q, want %d bytes", arg, n)
	}
	return mibPerSec(n, t2-t1)
}

// hostFetch runs bench-fetch on the host, timed like in a container.
func (s *Session) hostFetch(ctx context.Context, url string, n int64) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Opts.Fetch, url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	var lines []Line
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		lines = append(lines, Line{At: time.Since(start), Text: sc.Text()})
	}
	if err := cmd.Wait(); err != nil {
		return 0, cmdError("bench-fetch on the host", err, ctx, stderr.String())
	}
	return fetchFigure(lines, stderr.String(), n)
}

// --- memory -----------------------------------------------------------------------------

func (s *Session) workMemory(ctx context.Context) error {
	m1 := s.metric("mem_idle_1", "memory", "host memory (PSS) of one idle container: shim and every process below it; gondolin: also the VM processes its state file records "+
		"(a VM from the VM pool is the pool's child) and the VM pool serving its config (the pool process and its idle VMs)", "memory, 1 idle container", "MiB", report.LowerIsBetter)
	mN := s.metric("mem_idle_n", "memory", fmt.Sprintf("host memory (PSS) of %d idle containers at once, total (gondolin: with its VM pool, once)", s.Opts.IdleN), fmt.Sprintf("memory, %d idle, total", s.Opts.IdleN), "MiB", report.LowerIsBetter)
	mEach := s.metric("mem_idle_n_each", "memory", fmt.Sprintf("… per container, with %d idle at once", s.Opts.IdleN), fmt.Sprintf("memory, %d idle, each", s.Opts.IdleN), "MiB", report.LowerIsBetter)
	// Under TCG, QEMU's translation cache is a large part of each VM's
	// memory that a KVM host would not have: it gets a row of its own.
	mJIT := s.metric("mem_idle_n_each_jit", "memory", "… of it, anonymous executable memory: QEMU's TCG translation cache (none under KVM)", fmt.Sprintf("memory, %d idle, each: TCG cache", s.Opts.IdleN), "MiB", report.LowerIsBetter)
	for i := 0; i < s.Opts.IORuns; i++ {
		for _, rt := range rotate(s.runtimes, i) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !try(m1, rt) {
				continue
			}
			v, _, desc, err := s.idleMemory(ctx, rt, 1, i)
			s.record(rt, []*report.Metric{m1}, []float64{v}, err)
			if err == nil {
				m1.Results[rt.Name()].Note = desc
			}
		}
	}
	for _, rt := range s.runtimes {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !try(mN, rt) {
			continue
		}
		v, jit, desc, err := s.idleMemory(ctx, rt, s.Opts.IdleN, 0)
		n := float64(s.Opts.IdleN)
		s.record(rt, []*report.Metric{mN, mEach, mJIT}, []float64{v, v / n, jit / n}, err)
		if err == nil {
			mN.Results[rt.Name()].Note = desc
		}
	}
	return nil
}

// idleMemory starts n idle containers, waits for them to settle and returns
// the summed PSS of all their host processes, and the part of it in
// anonymous executable memory (TCG's translation caches). A gondolin
// runtime's VM pool is counted too, once however many containers took a
// VM from it: its idle VMs are what makes their creates fast.
func (s *Session) idleMemory(ctx context.Context, rt *Runtime, n, round int) (pssMiB, jitMiB float64, desc string, err error) {
	var ids []string
	defer func() {
		for _, id := range ids {
			s.Ctr.Remove(id)
		}
	}()
	for k := 0; k < n; k++ {
		id, err := s.startIdle(ctx, rt, fmt.Sprintf("idle%d", round), k)
		if err != nil {
			return 0, 0, "", fmt.Errorf("container %d of %d: %w", k+1, n, err)
		}
		ids = append(ids, id)
	}
	select {
	case <-time.After(s.Opts.Settle):
	case <-ctx.Done():
		return 0, 0, "", ctx.Err()
	}
	var all []Proc
	for _, id := range ids {
		procs, err := ContainerProcs(s.Opts.Address, s.Ctr.Namespace, id, rt.Gondolin())
		if err != nil {
			return 0, 0, "", err
		}
		all = append(all, withoutProcs(procs, all)...)
	}
	var pool string
	if rt.Gondolin() {
		pools, procs, err := VMPoolProcs(rt.Shim, rt.ConfigPath())
		if err != nil {
			return 0, 0, "", fmt.Errorf("the VM pool of %s: %w", rt.Name(), err)
		}
		procs = withoutProcs(procs, all)
		all = append(all, procs...)
		pool = "; " + describePool(pools, procs)
	}
	return SumPSS(all), SumJIT(all), DescribeProcs(all) + pool, nil
}
