package report

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func ptr(v float64) *float64 { return &v }

// phaseRuns: three gondolin runs of start_true (one without its VM line,
// one without any shim line), one of another metric, one of another
// runtime.
func phaseRuns() []*StartRun {
	return []*StartRun{
		{Metric: "start_true", Runtime: "gondolin", Container: "a", TotalMs: 1000, Boot: "snapshot",
			VM:     map[string]float64{"fs_start": 15, "vmm_start": 80, "channel": 1, "agent_info": 90, "restored": 14},
			Create: map[string]float64{"boot": 210, "guest_create": 190, "vm_setup": 2, "host_cgroup": 1, "parse": 0},
			Start:  map[string]float64{"hooks": 0, "network": 36, "guest_start": 43}},
		{Metric: "start_true", Runtime: "gondolin", Container: "b", TotalMs: 1200, Boot: "cold", GuestReadyMs: ptr(400),
			VM:     map[string]float64{"fs_start": 17, "vmm_start": 70, "channel": 300, "agent_info": 100, "pool_claim": 5},
			Create: map[string]float64{"boot": 500, "guest_create": 250, "vm_setup": 4, "host_cgroup": 1, "parse": 0},
			Start:  map[string]float64{"hooks": 0, "network": 40, "guest_start": 50}},
		{Metric: "start_true", Runtime: "gondolin", Container: "c", TotalMs: 900,
			Create:  map[string]float64{"boot": 300, "guest_create": 200, "vm_setup": 3, "host_cgroup": 2, "parse": 0},
			Start:   map[string]float64{"hooks": 0, "network": 30, "guest_start": 40},
			Missing: []string{"no VM line"}},
		{Metric: "start_true", Runtime: "gondolin", Container: "d", TotalMs: 5000,
			Missing: []string{"no create line", "no start line"}},
		{Metric: "start_first_line", Runtime: "gondolin", Container: "e", TotalMs: 1,
			Create: map[string]float64{"boot": 1}, Start: map[string]float64{}},
		{Metric: "start_true", Runtime: "gondolin-snapshot", Container: "f", TotalMs: 700,
			Create: map[string]float64{"boot": 100}, Start: map[string]float64{"network": 9}},
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestSummarizeStartPhases(t *testing.T) {
	p := SummarizeStartPhases(phaseRuns(), "gondolin", "start_true")
	if p == nil {
		t.Fatal("no summary")
	}
	if p.Runs != 4 || p.WithVM != 2 || p.WithCreate != 3 || p.WithStart != 3 {
		t.Errorf("runs %d, with VM/create/start %d/%d/%d, want 4, 2/3/3", p.Runs, p.WithVM, p.WithCreate, p.WithStart)
	}
	// Total: median of all four runs' totals (900, 1000, 1200, 5000).
	if !near(p.Total.Median, 1100) || p.Total.N != 4 {
		t.Errorf("total %+v, want median 1100 of 4", p.Total)
	}
	// Rest per run with both lines: 1000-403-79 = 518, 1200-755-90 = 355,
	// 900-505-70 = 325 → median 355; run d (no lines) is left out.
	if !near(p.Rest.Median, 355) || p.Rest.N != 3 {
		t.Errorf("rest %+v, want median 355 of 3", p.Rest)
	}
	if !near(p.VM.Sum.Median, 300) || p.VM.Sum.N != 3 {
		t.Errorf("boot %+v, want median 300 of 3", p.VM.Sum)
	}
	// boot less the VM's steps: 210-200 = 10, 500-492 = 8.
	if !near(p.VMRest.Median, 9) || p.VMRest.N != 2 {
		t.Errorf("vm rest %+v, want 9 of 2", p.VMRest)
	}
	if p.GuestReady.N != 1 || p.GuestReady.Median != 400 {
		t.Errorf("guest ready %+v", p.GuestReady)
	}
	if !near(p.GuestCreate.Median, 200) || p.GuestCreate.N != 3 {
		t.Errorf("guest_create %+v, want 200 of 3", p.GuestCreate)
	}
	// Other create steps per run: 3, 5, 5.
	if !near(p.Create.Sum.Median, 5) || p.Create.Sum.N != 3 {
		t.Errorf("create sum %+v, want 5 of 3", p.Create.Sum)
	}
	steps := map[string]PhaseStat{}
	for _, s := range p.Create.Steps {
		steps[s.Name] = s
	}
	if _, ok := steps["boot"]; ok {
		t.Error("boot is among the other create steps")
	}
	if _, ok := steps["guest_create"]; ok {
		t.Error("guest_create is among the other create steps")
	}
	if s := steps["parse"]; !s.Zero || s.N != 3 {
		t.Errorf("parse %+v, want zero in 3 runs", s)
	}
	if s := steps["vm_setup"]; s.Zero || s.Median != 3 {
		t.Errorf("vm_setup %+v, want 3", s)
	}
	// The VM's steps: any field, a field of one run (pool_claim) counted
	// in that run only; the largest first.
	var names []string
	for _, s := range p.VM.Steps {
		names = append(names, s.Name)
		if s.Name == "pool_claim" && (s.N != 1 || s.Median != 5) {
			t.Errorf("pool_claim %+v, want 5 in 1 run", s)
		}
	}
	if got := strings.Join(names, ","); got != "channel,agent_info,vmm_start,fs_start,restored,pool_claim" {
		t.Errorf("VM steps in order %s", got)
	}
	if !near(p.Start.Sum.Median, 79) {
		t.Errorf("start sum %+v, want 79", p.Start.Sum)
	}
	if p.BootKinds["snapshot"] != 1 || p.BootKinds["cold"] != 1 || len(p.BootKinds) != 2 {
		t.Errorf("boot kinds %v", p.BootKinds)
	}
	if p.Missing["no VM line"] != 1 || p.Missing["no create line"] != 1 {
		t.Errorf("missing %v", p.Missing)
	}
	if SummarizeStartPhases(phaseRuns(), "runc", "start_true") != nil {
		t.Error("a runtime without runs has a summary")
	}
}

func TestStartPhasesMarkdown(t *testing.T) {
	r := sample()
	r.Runtimes = append(r.Runtimes, &Runtime{Name: "gondolin-snapshot", RuntimeType: "io.containerd.gondolin.v1"})
	r.StartRuns = phaseRuns()
	md := r.Markdown()
	i := strings.Index(md, "## Start phases")
	if i < 0 {
		t.Fatalf("no Start phases section:\n%s", md)
	}
	sec := md[i:]
	for _, want := range []string{
		"### start to exit of `true`",
		// runc's total beside gondolin's (runc median 0.2 s); no column for
		// runsc, which has no runs.
		"| phase (median ms) | runc | gondolin | gondolin-snapshot |",
		"| **measured total** | 200 (3 runs) | 1100 (4 runs) ×5.50 | 700 (1 run) ×3.50 |",
		"| runs with the shim's lines: VM / create / start | — | 2 / 3 / 3 of 4 | 0 / 1 / 1 of 1 |",
		"| **shim + containerd** (total − the shim's steps) | — | 355 (in 3 of 4 runs) | 591 |",
		"| **VM** (boot) | — | 300 (in 3 of 4 runs) | 100 |",
		"| · pool_claim |  | 5 (in 1 of 2 runs) | — |",
		"| · rest of boot (outside its steps) |  | 9 (in 2 of 4 runs) | — |",
		"| · (guest uptime at agent ready, guest clock) |  | 400 (in 1 of 2 runs) | — |",
		"| **container create: guest_create** | — | 200 (in 3 of 4 runs) | — |",
		"| · vm_setup |  | 3 | — |",
		"| **container start** | — | 79 (in 3 of 4 runs) | 9 |",
		"| VM boot kinds | — | cold 1, snapshot 1 | — |",
		"At 0 ms in every run: create: parse; start: hooks.",
		"- gondolin, 1 of 4 runs: no VM line",
		"- gondolin, 1 of 4 runs: no create line",
	} {
		if !strings.Contains(sec, want) {
			t.Errorf("Start phases lack %q:\n%s", want, sec)
		}
	}
	// start_first_line is not a metric of the sample: no table for it.
	if strings.Count(sec, "### ") != 1 {
		t.Errorf("want one table:\n%s", sec)
	}
	// Every row of the phase table has as many cells as its header.
	for _, line := range strings.Split(sec, "\n") {
		if strings.HasPrefix(line, "| ") {
			if got := strings.Count(line, "|"); got != 5 {
				t.Errorf("row with %d separators: %s", got, line)
			}
		}
	}
	// The runs survive results.json (rerender).
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Markdown() != md {
		t.Error("results.json does not render the same Start phases")
	}
	// Without runs, no section.
	if strings.Contains(sample().Markdown(), "Start phases") {
		t.Error("Start phases without runs")
	}
}
