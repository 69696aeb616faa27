// Package harness runs the benchmark's workloads under each runtime through
// ctr and collects the figures into a report.Results.
package harness

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/earendil-works/gondolin-containerd/bench/report"
)

// Options configure a session.
type Options struct {
	Runs          int // start/exec samples per runtime
	IORuns        int // samples of the heavy jobs per runtime
	StdioBytes    int64
	FileBytes     int64
	DownloadBytes int64
	TreeFiles     int
	IdleN         int
	Settle        time.Duration
	Quick         bool
	Runtimes      []string // in column order
	Workloads     []string // subset of AllWorkloads

	Address        string // containerd socket
	Namespace      string
	ContainerdRoot string
	ContainerdLog  string
	Tools          string // .cache/tools/bin: ctr, runc, runsc
	RuntimeDir     string // the copied gondolin tree (bin/, share/)
	GondolinFrom   string // where RuntimeDir was copied from
	// BaselineDir is another gondolin tree (bin/, share/), built from
	// commit BaselineRev, that the runtimes gondolin-base and
	// gondolin-snapshot-base run: the before of a before/after.
	BaselineDir string
	BaselineRev string
	Repo        string
	Out         string // results folder
	WorkDir     string // bind-mount source and other large scratch files
	Busybox     string
	Fetch       string // static bench-fetch binary
	// PodImage is the pod workload's container image, in the bench
	// containerd's CRI namespace (hack/bench.sh imports it).
	PodImage string

	Log func(format string, args ...any)
}

// AllWorkloads in the order they run.
var AllWorkloads = []string{"start", "exec", "stdio", "rootfs", "bind", "tmpfs", "https", "https-relay", "http", "memory", "pod"}

// Session is one benchmark run.
type Session struct {
	Opts     Options
	Ctr      *Ctr
	Crictl   *Crictl // the pod workload's CRI client
	Image    string
	Results  *report.Results
	runtimes []*Runtime // available ones, in column order
	rng      *rand.Rand
	ctx      context.Context // of Run: failures after it ended are not the runtime's
	// startRuns are the start workload's measured runs under runtimes
	// whose shim logs the steps of a start; their phases are read from
	// containerd's log once the workloads are done.
	startRuns []*report.StartRun
}

func (s *Session) logf(format string, args ...any) {
	if s.Opts.Log != nil {
		s.Opts.Log(format, args...)
	}
}

// newID returns a fresh container id.
func (s *Session) newID(rt, job string, i int) string {
	return fmt.Sprintf("bench-%s-%s-%d-%04x", rt, job, i, s.rng.IntN(1<<16))
}

// NewSession prepares a session; nothing runs yet.
func NewSession(opts Options) *Session {
	s := &Session{
		Opts:   opts,
		Ctr:    &Ctr{Bin: filepath.Join(opts.Tools, "ctr"), Address: opts.Address, Namespace: opts.Namespace},
		Crictl: &Crictl{Bin: filepath.Join(opts.Tools, "crictl"), Endpoint: "unix://" + opts.Address},
		rng:    rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x9e3779b97f4a7c15)),
	}
	s.Results = &report.Results{
		Schema:  report.Schema,
		Started: time.Now().UTC(),
		Quick:   opts.Quick,
		Config: report.Config{
			Runs: opts.Runs, IORuns: opts.IORuns, StdioBytes: opts.StdioBytes, FileBytes: opts.FileBytes,
			TreeFiles: opts.TreeFiles, DownloadBytes: opts.DownloadBytes, IdleN: opts.IdleN,
			SettleSeconds: int(opts.Settle / time.Second),
		},
		WorkloadSeconds: map[string]float64{},
	}
	return s
}

// Run does the whole session: environment facts, image, runtimes, then every
// selected workload. A cancelled ctx stops early; what was measured stays.
func (s *Session) Run(ctx context.Context) error {
	s.ctx = ctx
	s.describeHost()
	spec := ImageSpec{Busybox: s.Opts.Busybox, Fetch: s.Opts.Fetch, FileBytes: s.Opts.FileBytes, TreeFiles: s.Opts.TreeFiles}
	if err := os.MkdirAll(s.Opts.WorkDir, 0o755); err != nil {
		return err
	}
	img, err := EnsureImage(ctx, s.Ctr, spec, s.Opts.WorkDir, s.logf)
	if err != nil {
		return err
	}
	s.Image = img

	for _, name := range s.Opts.Runtimes {
		s.logf("checking %s", name)
		rt := s.setupRuntime(ctx, name)
		s.Results.Runtimes = append(s.Results.Runtimes, rt.Info)
		if rt.Info.Absent != "" {
			s.logf("%s is absent: %s", name, rt.Info.Absent)
			continue
		}
		s.logf("%s ready: %s, accelerator %s", name, rt.Info.How, rt.Info.Accelerator)
		s.runtimes = append(s.runtimes, rt)
	}
	if len(s.runtimes) == 0 {
		return fmt.Errorf("no runtime can run a container here")
	}

	jobs := map[string]func(context.Context) error{
		"start": s.workStart, "exec": s.workExec, "stdio": s.workStdio,
		"rootfs":      func(ctx context.Context) error { return s.workIO(ctx, "rootfs") },
		"bind":        func(ctx context.Context) error { return s.workIO(ctx, "bind") },
		"tmpfs":       s.workTmpfs,
		"https":       func(ctx context.Context) error { return s.workDownload(ctx, DownloadHTTPS) },
		"https-relay": func(ctx context.Context) error { return s.workDownload(ctx, DownloadHTTPSRelay) },
		"http":        func(ctx context.Context) error { return s.workDownload(ctx, DownloadHTTP) },
		"memory":      s.workMemory,
		"pod":         s.workPod,
	}
	for _, w := range AllWorkloads {
		if !contains(s.Opts.Workloads, w) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		start := time.Now()
		s.logf("== %s", w)
		if err := jobs[w](ctx); err != nil {
			s.Results.Notes = append(s.Results.Notes, fmt.Sprintf("workload %s stopped: %v", w, err))
			s.logf("workload %s stopped: %v", w, err)
		}
		s.Results.WorkloadSeconds[w] = time.Since(start).Seconds()
	}
	s.collectStartPhases()
	s.addGoals()
	if ctx.Err() != nil {
		s.Results.Notes = append(s.Results.Notes, "interrupted: the session was cut short, later workloads are missing")
	}
	return nil
}

// addGoals registers the ratios issue 18 sets targets for, for every
// runtime with an egress policy, where the session measured both figures:
// HTTPS through the policy's interception over the same VM's HTTPS with
// the policy only relaying TCP (≥ 70 %: the policy's own cost, apart from
// the guest's TLS), plain HTTP through the policy over the host's direct
// rate (≥ 50 %); and, for information, each download over the host's.
func (s *Session) addGoals() {
	has := func(id string) bool { return s.Results.Metric(id) != nil }
	if has("pod_mem_pod2") && has("pod_mem_single2") {
		for _, rt := range s.runtimes {
			if rt.CRIHandler == "" {
				continue
			}
			s.Results.Goals = append(s.Results.Goals, &report.Goal{
				Title: rt.Name() + ": host memory of one idle pod of two containers / of two idle single containers",
				Num:   report.FigureRef{Metric: "pod_mem_pod2", Runtime: rt.Name()},
				Den:   report.FigureRef{Metric: "pod_mem_single2", Runtime: rt.Name()},
			})
		}
	}
	s.addRuncGoals()
	https, relay, plain := downloadMetric(DownloadHTTPS), downloadMetric(DownloadHTTPSRelay), downloadMetric(DownloadHTTP)
	for _, rt := range s.runtimes {
		if !rt.Egress {
			continue
		}
		name := rt.Name()
		if has(https) && has(relay) {
			s.Results.Goals = append(s.Results.Goals, &report.Goal{
				Title:  name + ": HTTPS through the policy (TLS intercepted) / the same VM's HTTPS with the policy relaying TCP",
				Num:    report.FigureRef{Metric: https, Runtime: name},
				Den:    report.FigureRef{Metric: relay, Runtime: name},
				Target: 0.70,
			})
		}
		if has(plain) {
			s.Results.Goals = append(s.Results.Goals, &report.Goal{
				Title:  name + ": plain HTTP through the policy / the host's direct HTTP",
				Num:    report.FigureRef{Metric: plain, Runtime: name},
				Den:    report.FigureRef{Metric: plain},
				Target: 0.50,
			})
		}
		for _, id := range []string{https, relay} {
			what := "HTTPS through the policy (TLS intercepted)"
			if id == relay {
				what = "HTTPS with the policy relaying TCP"
			}
			if has(id) {
				s.Results.Goals = append(s.Results.Goals, &report.Goal{
					Title: name + ": " + what + " / the host's direct HTTPS",
					Num:   report.FigureRef{Metric: id, Runtime: name},
					Den:   report.FigureRef{Metric: id},
				})
			}
		}
	}
}

// addRuncGoals registers, for every gondolin runtime of the session, the
// ratios to runc that issue 18 sets targets for, each beside the floor the
// emulated CPU sets for it (for information: no target): stdout and stdin
// throughput over runc's (≥ 50 %), beside the in-container pipe's over
// runc's; and for the tree jobs in the rootfs and in a bind mount runc's
// time over this runtime's (≥ 33 %: within 3x of runc), beside the same
// jobs in a tmpfs. Time ratios are taken runc over gondolin so that every
// ratio here reads "share of runc's speed".
func (s *Session) addRuncGoals() {
	if s.Results.Runtime(report.Baseline) == nil {
		return
	}
	has := func(id string) bool { return s.Results.Metric(id) != nil }
	for _, rt := range s.runtimes {
		if !rt.Gondolin() {
			continue
		}
		name := rt.Name()
		for _, g := range []struct {
			metric string
			target float64
			why    string
		}{
			{"stdout_throughput", 0.50, ""},
			{"stdin_throughput", 0.50, ""},
			{"pipe_throughput", 0, " (no stdio transport: the floor for stdout and stdin)"},
		} {
			if !has(g.metric) {
				continue
			}
			s.Results.Goals = append(s.Results.Goals, &report.Goal{
				Title:  fmt.Sprintf("%s: %s / runc's%s", name, s.Results.Metric(g.metric).Label(), g.why),
				Num:    report.FigureRef{Metric: g.metric, Runtime: name},
				Den:    report.FigureRef{Metric: g.metric, Runtime: report.Baseline},
				Target: g.target,
			})
		}
		for _, kind := range []string{"rootfs", "bind", "tmpfs"} {
			target, why := 1.0/3, " (within 3x of runc)"
			if kind == "tmpfs" {
				target, why = 0, " (a tmpfs, no virtio-fs: the floor for the rootfs and bind-mount times)"
			}
			for _, job := range []string{"untar", "find", "rm"} {
				id := kind + "_" + job
				if !has(id) {
					continue
				}
				s.Results.Goals = append(s.Results.Goals, &report.Goal{
					Title:  fmt.Sprintf("%s: runc's time / %s's, %s%s", name, name, s.Results.Metric(id).Label(), why),
					Num:    report.FigureRef{Metric: id, Runtime: report.Baseline},
					Den:    report.FigureRef{Metric: id, Runtime: name},
					Target: target,
					Better: report.HigherIsBetter,
				})
			}
		}
	}
}

// Finish computes the statistics and writes results.json, results.md and
// results.png into the results folder. It returns the Markdown.
func (s *Session) Finish() (string, error) {
	s.Results.Finished = time.Now().UTC()
	s.Results.Finalize()
	if err := s.Results.WriteJSON(filepath.Join(s.Opts.Out, "results.json")); err != nil {
		return "", err
	}
	md := s.Results.Markdown()
	if err := os.WriteFile(filepath.Join(s.Opts.Out, "results.md"), []byte(md), 0o644); err != nil {
		return md, err
	}
	if len(s.Results.Metrics) > 0 {
		if err := s.Results.WriteChartFile(filepath.Join(s.Opts.Out, "results.png")); err != nil {
			return md, fmt.Errorf("chart: %w", err)
		}
	}
	return md, nil
}

func (s *Session) describeHost() {
	h := &s.Results.Host
	h.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				h.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	h.CPUs = runtime.NumCPU()
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				kib, _ := strconv.ParseInt(f[1], 10, 64)
				h.MemoryMiB = kib / 1024
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			h.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	h.KVM = kvmStatus()
	h.Containerd = firstLine(filepath.Join(s.Opts.Tools, "containerd"), "--version")
	g := &s.Results.Git
	if out, err := exec.Command("git", "-C", s.Opts.Repo, "rev-parse", "--short", "HEAD").Output(); err == nil {
		g.Commit = strings.TrimSpace(string(out))
	} else {
		g.Commit = "unknown"
	}
	if out, err := exec.Command("git", "-C", s.Opts.Repo, "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
		g.Dirty = len(strings.TrimSpace(string(out))) > 0
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// rotate returns xs starting at element i mod len: run i of a workload starts
// with a different runtime than run i-1, so slow drift of the machine (other
// load, thermal, page cache) spreads over all runtimes alike.
func rotate[T any](xs []T, i int) []T {
	if len(xs) == 0 {
		return nil
	}
	k := i % len(xs)
	return append(append([]T(nil), xs[k:]...), xs[:k]...)
}

// metric registers a metric with a figure for every runtime of the session
// (absent runtimes marked so).
func (s *Session) metric(id, group, title, short, unit, better string) *report.Metric {
	if m := s.Results.Metric(id); m != nil {
		return m
	}
	m := &report.Metric{ID: id, Group: group, Title: title, Short: short, Unit: unit, Better: better, Results: map[string]*report.Figure{}}
	for _, info := range s.Results.Runtimes {
		f := &report.Figure{Accelerator: info.Accelerator}
		if info.Absent != "" {
			f.Status = report.StatusAbsent
		}
		m.Results[info.Name] = f
	}
	s.Results.Metrics = append(s.Results.Metrics, m)
	return m
}

// maxFailures: after this many failed attempts without a single success a
// figure is given up for the session (reported "not supported yet" with the
// error); with successes, failures are counted but do not stop it.
const maxFailures = 2

// try reports whether the runtime's figure of m should still be attempted.
func try(m *report.Metric, rt *Runtime) bool {
	f := m.Results[rt.Name()]
	if f == nil || f.Status == report.StatusAbsent {
		return false
	}
	if len(f.Samples) == 0 && len(f.Errors) >= maxFailures {
		return false
	}
	return len(f.Errors) < 3*maxFailures+len(f.Samples)
}

// record adds a sample or an error to the runtime's figure of each metric.
func (s *Session) record(rt *Runtime, ms []*report.Metric, values []float64, err error) {
	if err != nil && s.ctx != nil && s.ctx.Err() != nil {
		return // interrupted, not failed
	}
	for i, m := range ms {
		f := m.Results[rt.Name()]
		f.Accelerator = rt.Info.Accelerator
		if err != nil {
			f.Errors = append(f.Errors, err.Error())
			continue
		}
		f.Samples = append(f.Samples, values[i])
	}
	if err != nil {
		s.logf("  %-9s %s: error: %v", rt.Name(), ms[0].ID, err)
		return
	}
	var parts []string
	for i, m := range ms {
		parts = append(parts, fmt.Sprintf("%s %s %s", m.ID, report.FormatNumber(values[i]), m.Unit))
	}
	s.logf("  %-9s %s", rt.Name(), strings.Join(parts, ", "))
}
