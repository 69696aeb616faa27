package report

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// Schema names the layout of results.json; bump it when a field changes meaning.
const Schema = "gondolin-bench/1"

// Baseline is the runtime every ratio is taken against.
const Baseline = "runc"

// Status of one figure.
const (
	StatusOK          = "ok"                // at least one sample
	StatusUnsupported = "not supported yet" // the runtime is there, every attempt failed (Errors says how)
	StatusAbsent      = "absent"            // the runtime could not run at all here (Runtime.Absent says why)
	StatusSkipped     = "skipped"           // not measured in this session (flags)
)

// Better says which direction of a metric is the good one.
const (
	LowerIsBetter  = "lower"
	HigherIsBetter = "higher"
)

// Results is everything one session measured: results.json.
type Results struct {
	Schema   string    `json:"schema"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Quick marks a short smoke run (BENCH_QUICK=1): smaller sizes, fewer runs.
	Quick    bool       `json:"quick"`
	Git      Git        `json:"git"`
	Host     Host       `json:"host"`
	Config   Config     `json:"config"`
	Runtimes []*Runtime `json:"runtimes"`
	Metrics  []*Metric  `json:"metrics"`
	// WorkloadSeconds is how long each workload took, wall clock.
	WorkloadSeconds map[string]float64 `json:"workload_seconds"`
	// Goals are ratios between two figures that the project set a target
	// for (e.g. gondolin's intercepted HTTPS over its TCP relay).
	Goals []*Goal `json:"goals,omitempty"`
	// Notes are free-text remarks printed under the table.
	Notes []string `json:"notes,omitempty"`
	// StartRuns are the start workload's runs under a runtime whose shim
	// logs the steps of a start (gondolin), with those steps: the "Start
	// phases" tables.
	StartRuns []*StartRun `json:"start_runs,omitempty"`
}

// FigureRef names one figure: a runtime's figure of a metric, or with
// Runtime empty the metric's reference (e.g. the host's direct rate).
type FigureRef struct {
	Metric  string `json:"metric"`
	Runtime string `json:"runtime,omitempty"`
}

// Goal is the ratio of two figures' medians (Num over Den) with the value
// the project wants it to reach: at least Target when the ratio is
// higher-is-better, at most when lower-is-better; Target 0 is a ratio shown
// for information.
type Goal struct {
	Title  string    `json:"title"`
	Num    FigureRef `json:"numerator"`
	Den    FigureRef `json:"denominator"`
	Target float64   `json:"target,omitempty"`
	// Better is which way the ratio is good (HigherIsBetter or
	// LowerIsBetter); empty: the numerator metric's way. A ratio taken
	// against the metric's grain needs it: runc's time over this
	// runtime's is a lower-is-better metric whose ratio is good high.
	Better string `json:"better,omitempty"`
	// Value and Met are set by Finalize when both figures have samples.
	Value *float64 `json:"value,omitempty"`
	Met   *bool    `json:"met,omitempty"`
}

// Git identifies the tree that was measured.
type Git struct {
	Commit string `json:"commit"`
	Dirty  bool   `json:"dirty"`
}

// Host describes the machine.
type Host struct {
	Hostname  string `json:"hostname"`
	Kernel    string `json:"kernel"`
	CPUModel  string `json:"cpu_model"`
	CPUs      int    `json:"cpus"`
	MemoryMiB int64  `json:"memory_mib"`
	// KVM says whether /dev/kvm can run a guest here, and if not, why.
	KVM        string `json:"kvm"`
	Containerd string `json:"containerd"`
	LoadAvg    string `json:"loadavg_at_start"`
}

// Config is how the session was run.
type Config struct {
	Runs          int   `json:"runs"`            // start / exec / pod-time samples per runtime
	IORuns        int   `json:"io_runs"`         // samples of the heavy jobs per runtime
	StdioBytes    int64 `json:"stdio_bytes"`     // stdout and stdin throughput size
	FileBytes     int64 `json:"file_bytes"`      // sequential read/write file size
	TreeFiles     int   `json:"tree_files"`      // files in the metadata job's tree
	DownloadBytes int64 `json:"download_bytes"`  // HTTPS download size
	IdleN         int   `json:"idle_containers"` // containers in the "many idle" memory figure
	SettleSeconds int   `json:"settle_seconds"`  // wait before measuring idle memory
}

// Runtime is one runtime under test.
type Runtime struct {
	Name        string `json:"name"`         // runc, runsc, gondolin
	RuntimeType string `json:"runtime_type"` // containerd runtime, e.g. io.containerd.runc.v2
	Version     string `json:"version"`
	// Accelerator is what executes guest code: "native" (runc), the gVisor
	// platform (runsc), "TCG" or "KVM" (gondolin).
	Accelerator string `json:"accelerator"`
	// How is the exact way the runtime is invoked (ctr flags, runsc flags).
	How string `json:"how"`
	// Absent is empty when the runtime ran; otherwise why it could not.
	Absent string   `json:"absent,omitempty"`
	Notes  []string `json:"notes,omitempty"`
}

// Metric is one measured quantity for every runtime.
type Metric struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	// Short is the chart's label (Title if empty).
	Short  string `json:"short,omitempty"`
	Group  string `json:"group"`
	Unit   string `json:"unit"`
	Better string `json:"better"`
	// Results by runtime name.
	Results map[string]*Figure `json:"results"`
	// Reference is a figure outside the runtimes (e.g. the same download run
	// directly on the host), with its name.
	ReferenceName string  `json:"reference_name,omitempty"`
	Reference     *Figure `json:"reference,omitempty"`
}

// Figure is one runtime's samples of one metric, with their statistics.
type Figure struct {
	Status      string    `json:"status"`
	Accelerator string    `json:"accelerator"`
	Samples     []float64 `json:"samples"`
	Stats       *Stats    `json:"stats,omitempty"`
	// RatioToBaseline is this median over the baseline's median (runc).
	RatioToBaseline *float64 `json:"ratio_to_runc,omitempty"`
	// RatioToReference is this median over the metric's reference median.
	RatioToReference *float64 `json:"ratio_to_reference,omitempty"`
	Errors           []string `json:"errors,omitempty"`
	Note             string   `json:"note,omitempty"`
}

// Stats summarise a figure's samples.
type Stats struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	P95    float64 `json:"p95"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Mean   float64 `json:"mean"`
}

// NewStats computes the statistics of xs, nil for no samples.
func NewStats(xs []float64) *Stats {
	if len(xs) == 0 {
		return nil
	}
	s := &Stats{N: len(xs), Median: Median(xs), P95: P95(xs), Min: xs[0], Max: xs[0], Mean: Mean(xs)}
	for _, x := range xs {
		s.Min = min(s.Min, x)
		s.Max = max(s.Max, x)
	}
	return s
}

// Finalize fills in every figure's statistics, status and ratios. Call it once
// all samples are in, before writing.
func (r *Results) Finalize() {
	for _, m := range r.Metrics {
		figs := make([]*Figure, 0, len(m.Results)+1)
		for _, f := range m.Results {
			figs = append(figs, f)
		}
		if m.Reference != nil {
			figs = append(figs, m.Reference)
		}
		for _, f := range figs {
			if f.Samples == nil {
				f.Samples = []float64{}
			}
			f.Stats = NewStats(f.Samples)
			if f.Stats != nil {
				f.Status = StatusOK
			} else if f.Status == "" || f.Status == StatusOK {
				f.Status = StatusUnsupported
			}
			f.RatioToBaseline, f.RatioToReference = nil, nil
		}
		base := m.Results[Baseline]
		for name, f := range m.Results {
			if f.Stats == nil {
				continue
			}
			if base != nil && base.Stats != nil && name != Baseline {
				if v, ok := Ratio(f.Stats.Median, base.Stats.Median); ok {
					f.RatioToBaseline = &v
				}
			} else if name == Baseline {
				one := 1.0
				f.RatioToBaseline = &one
			}
			if m.Reference != nil && m.Reference.Stats != nil {
				if v, ok := Ratio(f.Stats.Median, m.Reference.Stats.Median); ok {
					f.RatioToReference = &v
				}
			}
		}
	}
	r.finalizeGoals()
}

// figure returns the figure ref names, nil if there is none.
func (r *Results) figure(ref FigureRef) (*Metric, *Figure) {
	m := r.Metric(ref.Metric)
	if m == nil {
		return nil, nil
	}
	if ref.Runtime == "" {
		return m, m.Reference
	}
	return m, m.Results[ref.Runtime]
}

// finalizeGoals computes each goal's ratio from the figures' medians.
func (r *Results) finalizeGoals() {
	for _, g := range r.Goals {
		g.Value, g.Met = nil, nil
		m, num := r.figure(g.Num)
		_, den := r.figure(g.Den)
		if num == nil || den == nil || num.Stats == nil || den.Stats == nil {
			continue
		}
		v, ok := Ratio(num.Stats.Median, den.Stats.Median)
		if !ok {
			continue
		}
		g.Value = &v
		if g.Target > 0 {
			met := v >= g.Target
			if g.better(m) == LowerIsBetter {
				met = v <= g.Target
			}
			g.Met = &met
		}
	}
}

// better is which way g's ratio is good: its own Better, else that of its
// numerator's metric m (nil: higher).
func (g *Goal) better(m *Metric) string {
	if g.Better != "" {
		return g.Better
	}
	if m != nil && m.Better == LowerIsBetter {
		return LowerIsBetter
	}
	return HigherIsBetter
}

// Label is the metric's short label, its title if it has none.
func (m *Metric) Label() string {
	if m.Short != "" {
		return m.Short
	}
	return m.Title
}

// Runtime returns the runtime named name, or nil.
func (r *Results) Runtime(name string) *Runtime {
	for _, rt := range r.Runtimes {
		if rt.Name == name {
			return rt
		}
	}
	return nil
}

// Metric returns the metric with the given id, or nil.
func (r *Results) Metric(id string) *Metric {
	for _, m := range r.Metrics {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// WriteJSON writes r, indented, to path.
func (r *Results) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding results: %w", err)
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
