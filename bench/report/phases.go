package report

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// StartRun is one run of the start workload under a runtime whose shim logs
// the steps of a start (gondolin): the total the harness measured and what
// the shim logged for that container. A map is nil when its log line was not
// found; Missing then says why. The step names are the log's fields without
// their "_ms" suffix, taken as they come (no fixed list), in milliseconds.
type StartRun struct {
	Metric    string  `json:"metric"`
	Runtime   string  `json:"runtime"`
	Container string  `json:"container"`
	TotalMs   float64 `json:"total_ms"`
	// Boot is the kind of VM start ("cold", "snapshot", …: boot= of the
	// shim's "guest agent ready" line).
	Boot string `json:"boot,omitempty"`
	// VM are the host's steps of the VM's start up to its agent's first
	// answer ("guest agent ready"); they run inside the create's boot step.
	VM map[string]float64 `json:"vm_ms,omitempty"`
	// GuestReadyMs is the guest's own uptime when its agent was ready (a
	// cold boot only): the guest's clock, overlapping the VM steps.
	GuestReadyMs *float64 `json:"guest_ready_ms,omitempty"`
	// Create are the steps of the container's create ("container
	// created"), boot (the VM) and guest_create among them.
	Create map[string]float64 `json:"create_ms,omitempty"`
	// Start are the steps of the container's start ("container started").
	Start   map[string]float64 `json:"start_ms,omitempty"`
	Missing []string           `json:"missing,omitempty"`
}

// The create steps the summary shows apart from the others: the VM's boot
// (with the VM's own steps below it) and the create inside the guest.
const (
	StepBoot        = "boot"
	StepGuestCreate = "guest_create"
)

// PhaseStat is the median of one phase over the runs it was found in.
type PhaseStat struct {
	Name   string
	Median float64
	N      int
	// Zero: 0 ms in every run it was found in.
	Zero bool
}

// PhaseGroup is a group of steps: the median of their per-run sum, and
// each step's median, the largest first.
type PhaseGroup struct {
	Sum   PhaseStat
	Steps []PhaseStat
}

// StartPhases summarises one runtime's runs of one start metric: where the
// time of a start went, as medians over the runs that logged each part.
// Medians of parts do not add up to the median of their sum.
type StartPhases struct {
	Runtime string
	Metric  string
	// Runs measured (with a total); of them, how many had each line.
	Runs       int
	WithVM     int
	WithCreate int
	WithStart  int
	// Total is the measured total, over all runs.
	Total PhaseStat
	// Rest is the total less every step of the create and the start, over
	// the runs with both lines: the shim's own start, containerd, ctr and
	// whatever the figure holds beyond the start (its first line's way
	// back, or the exit and teardown).
	Rest PhaseStat
	// VM is the create's boot step; its steps are the VM's own.
	VM PhaseGroup
	// VMRest is the boot less its steps (runs with both lines).
	VMRest      PhaseStat
	GuestReady  PhaseStat
	GuestCreate PhaseStat
	// Create is the create's other steps (neither boot nor guest_create).
	Create PhaseGroup
	Start  PhaseGroup
	// BootKinds counts the runs by their VM's boot kind.
	BootKinds map[string]int
	// Missing counts the runs by why a line was missing.
	Missing map[string]int
}

// stat is the PhaseStat of xs; N 0 (and Median NaN) for none.
func stat(name string, xs []float64) PhaseStat {
	s := PhaseStat{Name: name, N: len(xs), Median: math.NaN()}
	if len(xs) == 0 {
		return s
	}
	s.Median = Median(xs)
	s.Zero = true
	for _, x := range xs {
		if x != 0 {
			s.Zero = false
		}
	}
	return s
}

func sum(m map[string]float64, except ...string) float64 {
	var t float64
	for k, v := range m {
		if !contains(except, k) {
			t += v
		}
	}
	return t
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// group summarises the steps of maps (one per run that had the line), but
// those in except: each step's median over the runs that logged it, and
// the median of the per-run sums.
func group(maps []map[string]float64, except ...string) PhaseGroup {
	var sums []float64
	by := map[string][]float64{}
	for _, m := range maps {
		sums = append(sums, sum(m, except...))
		for k, v := range m {
			if !contains(except, k) {
				by[k] = append(by[k], v)
			}
		}
	}
	g := PhaseGroup{Sum: stat("", sums)}
	for k, xs := range by {
		g.Steps = append(g.Steps, stat(k, xs))
	}
	sortSteps(g.Steps, func(s PhaseStat) float64 { return s.Median })
	return g
}

// sortSteps orders steps by key, the largest first, then by name.
func sortSteps(steps []PhaseStat, key func(PhaseStat) float64) {
	sort.Slice(steps, func(i, j int) bool {
		if a, b := key(steps[i]), key(steps[j]); a != b {
			return a > b
		}
		return steps[i].Name < steps[j].Name
	})
}

// SummarizeStartPhases summarises runtime's runs of metric among runs; nil
// when there are none.
func SummarizeStartPhases(runs []*StartRun, runtime, metric string) *StartPhases {
	p := &StartPhases{Runtime: runtime, Metric: metric, BootKinds: map[string]int{}, Missing: map[string]int{}}
	var totals, rests, boots, vmRests, guestReady, guestCreate []float64
	var vms, creates, starts []map[string]float64
	for _, r := range runs {
		if r.Runtime != runtime || r.Metric != metric {
			continue
		}
		p.Runs++
		totals = append(totals, r.TotalMs)
		for _, why := range r.Missing {
			p.Missing[why]++
		}
		if r.VM != nil {
			p.WithVM++
			vms = append(vms, r.VM)
			if r.Boot != "" {
				p.BootKinds[r.Boot]++
			}
			if r.GuestReadyMs != nil {
				guestReady = append(guestReady, *r.GuestReadyMs)
			}
		}
		if r.Create != nil {
			p.WithCreate++
			creates = append(creates, r.Create)
			if v, ok := r.Create[StepBoot]; ok {
				boots = append(boots, v)
				if r.VM != nil {
					vmRests = append(vmRests, v-sum(r.VM))
				}
			}
			if v, ok := r.Create[StepGuestCreate]; ok {
				guestCreate = append(guestCreate, v)
			}
		}
		if r.Start != nil {
			p.WithStart++
			starts = append(starts, r.Start)
		}
		if r.Create != nil && r.Start != nil {
			rests = append(rests, r.TotalMs-sum(r.Create)-sum(r.Start))
		}
	}
	if p.Runs == 0 {
		return nil
	}
	p.Total = stat("total", totals)
	p.Rest = stat("rest", rests)
	p.VM = group(vms)
	p.VM.Sum = stat(StepBoot, boots)
	p.VMRest = stat("vm_rest", vmRests)
	p.GuestReady = stat("guest_ready", guestReady)
	p.GuestCreate = stat(StepGuestCreate, guestCreate)
	p.Create = group(creates, StepBoot, StepGuestCreate)
	p.Start = group(starts)
	return p
}

// startPhasesMarkdown renders the "Start phases" section: for each metric
// with StartRuns, a table of the phases' medians per runtime, beside runc's
// measured total. Empty when there are no StartRuns.
func (r *Results) startPhasesMarkdown() string {
	if len(r.StartRuns) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n## Start phases\n\n")
	b.WriteString("Where a start's time goes, from the steps the gondolin shim logs for each container " +
		"(containerd's log at debug level), matched to the run by its container id. Each cell: the median in ms " +
		"over the runs that logged that part (\"in n of N runs\" when not all did); medians of parts do not add up " +
		"to the median of their sum. **shim + containerd** is per run the measured total less every step of the " +
		"shim's create and start: the shim's own start, containerd, ctr, and what the figure holds beyond the start " +
		"(the first line's way back to ctr; for `true` its exit and the --rm teardown). **VM** is the create's boot " +
		"step, its rows the VM's steps up to its agent's first answer (\"rest of boot\": the boot less those). " +
		"**create** is the create's other host steps, guest_create (the create inside the guest) apart; **start** " +
		"the start's steps. Steps are the log's own field names; those at 0 ms in every run are listed below the table.\n")
	for _, m := range r.Metrics {
		var cols []*StartPhases
		for _, rt := range r.Runtimes {
			if p := SummarizeStartPhases(r.StartRuns, rt.Name, m.ID); p != nil {
				cols = append(cols, p)
			}
		}
		if len(cols) == 0 {
			continue
		}
		b.WriteString(r.phaseTable(m, cols))
	}
	return b.String()
}

// phaseTable is the table of one start metric: a column for runc's total
// (when the session measured it) and one per runtime in cols.
func (r *Results) phaseTable(m *Metric, cols []*StartPhases) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n### %s\n\n", oneLine(m.Title))
	base := m.Results[Baseline]
	hasBase := base != nil && base.Stats != nil
	b.WriteString("| phase (median ms) |")
	if hasBase {
		fmt.Fprintf(&b, " %s |", Baseline)
	}
	for _, c := range cols {
		fmt.Fprintf(&b, " %s |", c.Runtime)
	}
	b.WriteString("\n|---|")
	if hasBase {
		b.WriteString("---|")
	}
	for range cols {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	row := func(label, baseCell string, cell func(*StartPhases) string) {
		fmt.Fprintf(&b, "| %s |", label)
		if hasBase {
			fmt.Fprintf(&b, " %s |", baseCell)
		}
		for _, c := range cols {
			fmt.Fprintf(&b, " %s |", cell(c))
		}
		b.WriteString("\n")
	}
	// of: a phase's cell, with the runs it comes from when not all of them.
	of := func(s PhaseStat, runs int) string {
		if s.N == 0 {
			return "—"
		}
		v := formatMs(s.Median)
		if s.N < runs {
			v += fmt.Sprintf(" (in %d of %d runs)", s.N, runs)
		}
		return v
	}
	baseTotal := ""
	if hasBase {
		baseTotal = fmt.Sprintf("%s (%s)", formatMs(base.Stats.Median*1000), runsText(base.Stats.N))
	}
	row("**measured total**", baseTotal, func(c *StartPhases) string {
		v := fmt.Sprintf("%s (%s)", formatMs(c.Total.Median), runsText(c.Runs))
		if hasBase {
			if q, ok := Ratio(c.Total.Median, base.Stats.Median*1000); ok {
				v += " " + FormatRatio(q)
			}
		}
		return v
	})
	row("runs with the shim's lines: VM / create / start", "—", func(c *StartPhases) string {
		return fmt.Sprintf("%d / %d / %d of %d", c.WithVM, c.WithCreate, c.WithStart, c.Runs)
	})
	row("**shim + containerd** (total − the shim's steps)", "—", func(c *StartPhases) string { return of(c.Rest, c.Runs) })

	var zero []string
	steps := func(kind string, g func(*StartPhases) PhaseGroup, runs func(*StartPhases) int) {
		names := map[string]float64{}
		allZero := map[string]bool{}
		for _, c := range cols {
			for _, s := range g(c).Steps {
				names[s.Name] = math.Max(names[s.Name], s.Median)
				if z, seen := allZero[s.Name]; !seen || z {
					allZero[s.Name] = s.Zero
				}
			}
		}
		var order []PhaseStat
		for n, v := range names {
			order = append(order, PhaseStat{Name: n, Median: v})
		}
		sortSteps(order, func(s PhaseStat) float64 { return s.Median })
		var zs []string
		for _, o := range order {
			if allZero[o.Name] {
				zs = append(zs, o.Name)
				continue
			}
			row("· "+oneLine(o.Name), "", func(c *StartPhases) string {
				for _, s := range g(c).Steps {
					if s.Name == o.Name {
						return of(s, runs(c))
					}
				}
				return "—"
			})
		}
		if len(zs) > 0 {
			sort.Strings(zs)
			zero = append(zero, kind+": "+strings.Join(zs, ", "))
		}
	}

	row("**VM** (boot)", "—", func(c *StartPhases) string { return of(c.VM.Sum, c.Runs) })
	steps("VM", func(c *StartPhases) PhaseGroup { return c.VM }, func(c *StartPhases) int { return c.WithVM })
	row("· rest of boot (outside its steps)", "", func(c *StartPhases) string { return of(c.VMRest, c.Runs) })
	if anyRuns(cols, func(c *StartPhases) int { return c.GuestReady.N }) {
		row("· (guest uptime at agent ready, guest clock)", "", func(c *StartPhases) string { return of(c.GuestReady, c.WithVM) })
	}
	row("**container create: guest_create**", "—", func(c *StartPhases) string { return of(c.GuestCreate, c.Runs) })
	row("**container create: other steps**", "—", func(c *StartPhases) string { return of(c.Create.Sum, c.Runs) })
	steps("create", func(c *StartPhases) PhaseGroup { return c.Create }, func(c *StartPhases) int { return c.WithCreate })
	row("**container start**", "—", func(c *StartPhases) string { return of(c.Start.Sum, c.Runs) })
	steps("start", func(c *StartPhases) PhaseGroup { return c.Start }, func(c *StartPhases) int { return c.WithStart })
	if anyRuns(cols, func(c *StartPhases) int { return len(c.BootKinds) }) {
		row("VM boot kinds", "—", func(c *StartPhases) string { return countsText(c.BootKinds) })
	}

	if len(zero) > 0 {
		fmt.Fprintf(&b, "\nAt 0 ms in every run: %s.\n", strings.Join(zero, "; "))
	}
	var missing []string
	for _, c := range cols {
		for why, n := range c.Missing {
			missing = append(missing, fmt.Sprintf("- %s, %d of %d runs: %s", c.Runtime, n, c.Runs, oneLine(why)))
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		b.WriteString("\nMissing from the shim's log (those runs are left out of the rows that need the line):\n\n")
		b.WriteString(strings.Join(missing, "\n"))
		b.WriteString("\n")
	}
	return b.String()
}

// formatMs prints milliseconds: whole from 10 ms up, else to a tenth
// (the shim logs whole ms; medians and differences add halves and
// fractions).
func formatMs(v float64) string {
	if math.Abs(v) >= 10 {
		return fmt.Sprintf("%.0f", v)
	}
	return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64)
}

func runsText(n int) string {
	if n == 1 {
		return "1 run"
	}
	return fmt.Sprintf("%d runs", n)
}

func anyRuns(cols []*StartPhases, n func(*StartPhases) int) bool {
	for _, c := range cols {
		if n(c) > 0 {
			return true
		}
	}
	return false
}

// countsText prints counts as "cold 2, snapshot 1" ("—" for none).
func countsText(m map[string]int) string {
	if len(m) == 0 {
		return "—"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", oneLine(k), m[k])
	}
	return strings.Join(parts, ", ")
}
