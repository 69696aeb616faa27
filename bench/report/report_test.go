package report

import (
	"bytes"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestQuantiles(t *testing.T) {
	cases := []struct {
		xs          []float64
		median, p95 float64
	}{
		{[]float64{5}, 5, 5},
		{[]float64{2, 1}, 1.5, 1.95},
		{[]float64{3, 1, 2}, 2, 2.9},
		// 10 samples: p95 is 55 % of the way from the 9th to the 10th.
		{[]float64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, 5.5, 9.55},
		{[]float64{1, 1, 1, 1, 100}, 1, 80.2},
	}
	for _, c := range cases {
		in := append([]float64(nil), c.xs...)
		if got := Median(c.xs); math.Abs(got-c.median) > 1e-9 {
			t.Errorf("Median(%v) = %v, want %v", c.xs, got, c.median)
		}
		if got := P95(c.xs); math.Abs(got-c.p95) > 1e-9 {
			t.Errorf("P95(%v) = %v, want %v", c.xs, got, c.p95)
		}
		for i := range in {
			if in[i] != c.xs[i] {
				t.Fatalf("Quantile sorted its input in place: %v", c.xs)
			}
		}
	}
	if !math.IsNaN(Median(nil)) || !math.IsNaN(P95(nil)) || !math.IsNaN(Mean(nil)) {
		t.Error("statistics of no samples must be NaN")
	}
	if !math.IsNaN(Quantile([]float64{1}, 1.5)) {
		t.Error("Quantile with q > 1 must be NaN")
	}
	if got := Mean([]float64{1, 2, 6}); got != 3 {
		t.Errorf("Mean = %v, want 3", got)
	}
}

func TestRatio(t *testing.T) {
	if v, ok := Ratio(3, 1.5); !ok || v != 2 {
		t.Errorf("Ratio(3, 1.5) = %v, %v", v, ok)
	}
	for _, c := range [][2]float64{{1, 0}, {1, -1}, {1, math.NaN()}, {math.NaN(), 1}, {math.Inf(1), 1}} {
		if _, ok := Ratio(c[0], c[1]); ok {
			t.Errorf("Ratio(%v, %v) must be undefined", c[0], c[1])
		}
	}
}

func TestFormatNumber(t *testing.T) {
	for v, want := range map[float64]string{
		1234.5: "1234", 123.4: "123", 12.34: "12.3", 1.234: "1.23", 0.1234: "0.123", 0.01234: "0.0123", 0: "0",
	} {
		if got := FormatNumber(v); got != want {
			t.Errorf("FormatNumber(%v) = %q, want %q", v, got, want)
		}
	}
	if got := FormatNumber(math.NaN()); got != "n/a" {
		t.Errorf("FormatNumber(NaN) = %q", got)
	}
}

// sample builds a small session: runc and gondolin measured, runsc absent, one
// figure gondolin cannot do yet, one reference figure.
func sample() *Results {
	r := &Results{
		Schema:  Schema,
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Git:     Git{Commit: "abc1234"},
		Host:    Host{Hostname: "h", CPUs: 2, KVM: "not usable: no vmx/svm"},
		Config:  Config{Runs: 3, IORuns: 1},
		Runtimes: []*Runtime{
			{Name: "runc", RuntimeType: "io.containerd.runc.v2", Accelerator: "native"},
			{Name: "runsc", RuntimeType: "io.containerd.runc.v2", Accelerator: "systrap", Absent: "runsc: exit status 1 | boom"},
			{Name: "gondolin", RuntimeType: "io.containerd.gondolin.v1", Accelerator: "TCG"},
		},
	}
	r.Finished = r.Started.Add(time.Minute)
	r.Metrics = []*Metric{
		{ID: "start_true", Title: "start to exit of `true`", Group: "start", Unit: "s", Better: LowerIsBetter,
			Results: map[string]*Figure{
				"runc":     {Accelerator: "native", Samples: []float64{0.2, 0.1, 0.3}},
				"runsc":    {Accelerator: "systrap", Status: StatusAbsent},
				"gondolin": {Accelerator: "TCG", Samples: []float64{3, 2, 2.5}, Errors: []string{"one flake"}},
			}},
		{ID: "stdout", Title: "stdout throughput", Group: "stdio", Unit: "MiB/s", Better: HigherIsBetter,
			Results: map[string]*Figure{
				"runc":     {Accelerator: "native", Samples: []float64{1000}},
				"runsc":    {Accelerator: "systrap", Status: StatusAbsent},
				"gondolin": {Accelerator: "TCG", Samples: []float64{250}},
			}},
		{ID: "exec", Title: "exec latency", Group: "exec", Unit: "s", Better: LowerIsBetter,
			Results: map[string]*Figure{
				"runc":     {Accelerator: "native", Samples: []float64{0.05}},
				"runsc":    {Accelerator: "systrap", Status: StatusAbsent},
				"gondolin": {Accelerator: "TCG", Errors: []string{"ctr: exec: not implemented\nsecond line"}},
			}},
		{ID: "https", Title: "HTTPS download", Group: "network", Unit: "MiB/s", Better: HigherIsBetter,
			ReferenceName: "direct from the host", Reference: &Figure{Accelerator: "native", Samples: []float64{400}},
			Results: map[string]*Figure{
				"runc":     {Accelerator: "native", Samples: []float64{200}},
				"runsc":    {Accelerator: "systrap", Status: StatusAbsent},
				"gondolin": {Accelerator: "TCG", Samples: []float64{100}},
			}},
	}
	r.Finalize()
	return r
}

func TestFinalize(t *testing.T) {
	r := sample()
	start := r.Metric("start_true")
	g := start.Results["gondolin"]
	if g.Status != StatusOK || g.Stats == nil || g.Stats.N != 3 || g.Stats.Median != 2.5 || g.Stats.Min != 2 || g.Stats.Max != 3 {
		t.Fatalf("gondolin start figure: %+v %+v", g, g.Stats)
	}
	if g.RatioToBaseline == nil || math.Abs(*g.RatioToBaseline-12.5) > 1e-9 {
		t.Errorf("ratio to runc = %v, want 12.5", g.RatioToBaseline)
	}
	if rc := start.Results["runc"]; rc.RatioToBaseline == nil || *rc.RatioToBaseline != 1 {
		t.Errorf("runc's own ratio = %v, want 1", rc.RatioToBaseline)
	}
	if f := start.Results["runsc"]; f.Status != StatusAbsent || f.Stats != nil || f.RatioToBaseline != nil {
		t.Errorf("absent runsc figure: %+v", f)
	}
	if f := r.Metric("exec").Results["gondolin"]; f.Status != StatusUnsupported || f.Stats != nil {
		t.Errorf("failed figure: %+v", f)
	}
	if f := r.Metric("https").Results["gondolin"]; f.RatioToReference == nil || *f.RatioToReference != 0.25 {
		t.Errorf("ratio to reference = %v, want 0.25", f.RatioToReference)
	}
	if c, ok := Cost(r.Metric("stdout"), r.Metric("stdout").Results["gondolin"]); !ok || c != 4 {
		t.Errorf("cost of a quarter of runc's throughput = %v, want 4", c)
	}
}

func TestJSONShape(t *testing.T) {
	r := sample()
	path := filepath.Join(t.TempDir(), "results.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("results.json is not JSON: %v", err)
	}
	for _, k := range []string{"schema", "started", "finished", "quick", "git", "host", "config", "runtimes", "metrics"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("results.json lacks %q", k)
		}
	}
	if doc["schema"] != Schema {
		t.Errorf("schema = %v", doc["schema"])
	}
	metrics := doc["metrics"].([]any)
	if len(metrics) != 4 {
		t.Fatalf("%d metrics", len(metrics))
	}
	m0 := metrics[0].(map[string]any)
	for _, k := range []string{"id", "title", "unit", "better", "results"} {
		if _, ok := m0[k]; !ok {
			t.Errorf("metric lacks %q: %v", k, m0)
		}
	}
	g := m0["results"].(map[string]any)["gondolin"].(map[string]any)
	if g["accelerator"] != "TCG" || g["status"] != StatusOK {
		t.Errorf("figure: %v", g)
	}
	if _, ok := g["ratio_to_runc"].(float64); !ok {
		t.Errorf("figure lacks ratio_to_runc: %v", g)
	}
	stats := g["stats"].(map[string]any)
	for _, k := range []string{"n", "median", "p95", "min", "max", "mean"} {
		if _, ok := stats[k].(float64); !ok {
			t.Errorf("stats lack %q: %v", k, stats)
		}
	}
	if len(g["samples"].([]any)) != 3 {
		t.Errorf("samples: %v", g["samples"])
	}
	// A figure without samples still has an (empty) samples list and no stats.
	e := metrics[2].(map[string]any)["results"].(map[string]any)["gondolin"].(map[string]any)
	if s, ok := e["samples"].([]any); !ok || len(s) != 0 {
		t.Errorf("failed figure samples: %v", e["samples"])
	}
	if _, ok := e["stats"]; ok {
		t.Errorf("failed figure has stats: %v", e)
	}
	if e["status"] != StatusUnsupported || len(e["errors"].([]any)) != 1 {
		t.Errorf("failed figure: %v", e)
	}
	rts := doc["runtimes"].([]any)
	if rts[1].(map[string]any)["absent"] == "" {
		t.Errorf("absent runtime lacks its reason: %v", rts[1])
	}
}

func TestMarkdown(t *testing.T) {
	md := sample().Markdown()
	for _, want := range []string{
		"| workload | unit | better | runc | runsc | gondolin |",
		"|---|---|---|---|---|---|",
		"| start to exit of `true` | s | lower | 0.200 (p95 0.290) · native |",
		"| absent [1] | 2.50 (p95 2.95) ×12.5 · TCG [2] |",
		"| stdout throughput | MiB/s | higher | 1000 · native | absent [1] | 250 ×0.250 · TCG |",
		"not supported yet · TCG [3]",
		`1. runsc is absent: runsc: exit status 1 \| boom`,
		"2. gondolin, start to exit of `true`: 1 of 4 attempts failed: one flake",
		"3. gondolin, exec latency: ctr: exec: not implemented second line",
		"HTTPS download, direct from the host: 400 MiB/s (p95 400); runc ×0.500 of it; gondolin ×0.250 of it",
		"KVM: not usable: no vmx/svm",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	// Every table row has as many cells as the header.
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "| ") {
			if got := strings.Count(strings.ReplaceAll(line, `\|`, ""), "|"); got != 7 {
				t.Errorf("row with %d separators: %s", got, line)
			}
		}
	}
}

func TestChart(t *testing.T) {
	var buf bytes.Buffer
	if err := sample().WriteChart(&buf); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("chart is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 500 || b.Dy() < 100 {
		t.Errorf("chart is %v", b)
	}
}

func TestGoals(t *testing.T) {
	r := sample()
	r.Metrics = append(r.Metrics, &Metric{ID: "https_relay", Title: "HTTPS download, TCP relay", Group: "network", Unit: "MiB/s", Better: HigherIsBetter,
		Results: map[string]*Figure{
			"runc":     {Status: StatusSkipped},
			"gondolin": {Accelerator: "TCG", Samples: []float64{120, 125, 130}},
		}})
	r.Goals = []*Goal{
		{Title: "intercepted / relayed", Num: FigureRef{"https", "gondolin"}, Den: FigureRef{"https_relay", "gondolin"}, Target: 0.7},
		{Title: "gondolin / host", Num: FigureRef{"https", "gondolin"}, Den: FigureRef{Metric: "https"}, Target: 0.2},
		{Title: "informational", Num: FigureRef{"https_relay", "gondolin"}, Den: FigureRef{Metric: "https"}},
		{Title: "missing", Num: FigureRef{"https_relay", "runc"}, Den: FigureRef{Metric: "https"}, Target: 0.5},
	}
	r.Finalize()
	if g := r.Goals[0]; g.Value == nil || *g.Value != 100.0/125 || g.Met == nil || !*g.Met {
		t.Errorf("intercepted/relayed: value %v met %v, want 0.8 met", g.Value, g.Met)
	}
	if g := r.Goals[1]; g.Value == nil || *g.Value != 0.25 || g.Met == nil || !*g.Met {
		t.Errorf("gondolin/host: value %v met %v, want 0.25 met", g.Value, g.Met)
	}
	if g := r.Goals[2]; g.Value == nil || *g.Value != 125.0/400 || g.Met != nil {
		t.Errorf("informational: value %v met %v, want 0.3125 and no verdict", g.Value, g.Met)
	}
	if g := r.Goals[3]; g.Value != nil || g.Met != nil {
		t.Errorf("a skipped figure has no ratio: value %v met %v", g.Value, g.Met)
	}
	r.Goals[0].Target = 0.9
	r.Finalize()
	if g := r.Goals[0]; g.Met == nil || *g.Met {
		t.Errorf("0.8 against a 0.9 goal: met %v", g.Met)
	}
	md := r.Markdown()
	for _, want := range []string{
		"Ratios between figures (medians):",
		"- intercepted / relayed: **80 %** (goal ≥ 90 %: not met) = HTTPS download, gondolin: 100 MiB/s / HTTPS download, TCP relay, gondolin: 125 MiB/s",
		"- gondolin / host: **25 %** (goal ≥ 20 %: met) = HTTPS download, gondolin: 100 MiB/s / HTTPS download, direct from the host: 400 MiB/s",
		"- informational: **31 %** = ",
		"- missing: n/a (goal ≥ 50 %) = HTTPS download, TCP relay, runc: no figure",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
}

// TestGoalAgainstTheMetricsGrain: runc's time over gondolin's, a ratio of a
// lower-is-better metric that is good high ("within 3x" is runc / gondolin
// ≥ 33 %), and the same with the metric's own way for comparison.
func TestGoalAgainstTheMetricsGrain(t *testing.T) {
	r := sample()
	r.Goals = []*Goal{
		{Title: "runc's start / gondolin's", Num: FigureRef{"start_true", "runc"}, Den: FigureRef{"start_true", "gondolin"}, Target: 1.0 / 3, Better: HigherIsBetter},
		{Title: "runc's start / gondolin's, a lower goal", Num: FigureRef{"start_true", "runc"}, Den: FigureRef{"start_true", "gondolin"}, Target: 0.05, Better: HigherIsBetter},
		{Title: "gondolin's start / runc's", Num: FigureRef{"start_true", "gondolin"}, Den: FigureRef{"start_true", "runc"}, Target: 3},
		{Title: "information", Num: FigureRef{"start_true", "runc"}, Den: FigureRef{"start_true", "gondolin"}, Better: HigherIsBetter},
	}
	r.Finalize()
	if g := r.Goals[0]; g.Value == nil || *g.Value != 0.2/2.5 || g.Met == nil || *g.Met {
		t.Errorf("runc/gondolin 8 %% against ≥ 33 %%: value %v met %v, want 0.08 not met", g.Value, g.Met)
	}
	if g := r.Goals[1]; g.Met == nil || !*g.Met {
		t.Errorf("runc/gondolin 8 %% against ≥ 5 %%: met %v, want met", g.Met)
	}
	if g := r.Goals[2]; g.Met == nil || *g.Met {
		t.Errorf("gondolin/runc 1250 %% against ≤ 300 %%: met %v, want not met", g.Met)
	}
	if g := r.Goals[3]; g.Value == nil || g.Met != nil {
		t.Errorf("information: value %v met %v, want a value and no verdict", g.Value, g.Met)
	}
	md := r.Markdown()
	for _, want := range []string{
		"- runc's start / gondolin's: **8 %** (goal ≥ 33 %: not met) = start to exit of `true`, runc: 0.200 s / start to exit of `true`, gondolin: 2.50 s\n",
		"- runc's start / gondolin's, a lower goal: **8 %** (goal ≥ 5 %: met) = ",
		"- gondolin's start / runc's: **1250 %** (goal ≤ 300 %: not met) = ",
		"- information: **8 %** = start to exit of `true`, runc",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
}

func TestMarkdownFigureNotes(t *testing.T) {
	r := sample()
	r.Metrics = append(r.Metrics, &Metric{ID: "pod_mem", Title: "host memory of an idle pod", Short: "memory, idle pod", Group: "pods", Unit: "MiB", Better: LowerIsBetter,
		Results: map[string]*Figure{
			"runc":     {Accelerator: "native", Samples: []float64{10}, Note: "containerd-shim-runc-v2 8.0 MiB, sh 1.0 MiB, sleep 1.0 MiB (2 processes)"},
			"runsc":    {Accelerator: "systrap", Status: StatusSkipped, Note: "no CRI handler"},
			"gondolin": {Accelerator: "TCG", Errors: []string{"boom"}, Note: "a note of a figure without samples"},
		}})
	r.Finalize()
	md := r.Markdown()
	for _, want := range []string{
		"| host memory of an idle pod | MiB | lower | 10.0 · native | skipped [4] | not supported yet · TCG [5] |",
		"4. runsc, host memory of an idle pod: skipped: no CRI handler",
		"Per figure (memory: PSS by host process, of the last sample):\n\n- memory, idle pod, runc: containerd-shim-runc-v2 8.0 MiB, sh 1.0 MiB, sleep 1.0 MiB (2 processes)\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "a note of a figure without samples") {
		t.Errorf("results.md shows the note of a figure without samples:\n%s", md)
	}
}
