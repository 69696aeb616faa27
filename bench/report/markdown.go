package report

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// FormatNumber prints v with about three significant digits: 1234, 123, 12.3,
// 1.23, 0.123, 0.0123.
func FormatNumber(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "n/a"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	case a == 0:
		return "0"
	default:
		// Three significant digits, trailing zeros kept: 0.200, 0.0123.
		return strconv.FormatFloat(v, 'f', 2-int(math.Floor(math.Log10(a))), 64)
	}
}

// FormatRatio prints a ratio as "×1.23".
func FormatRatio(v float64) string { return "×" + FormatNumber(v) }

// cell is one table cell: the median, its p95, the ratio to runc and the
// accelerator the figure was measured with.
func cell(m *Metric, name string, f *Figure, rt *Runtime, notes *footnotes) string {
	if f == nil {
		return "—"
	}
	switch {
	case f.Stats != nil:
		var b strings.Builder
		b.WriteString(FormatNumber(f.Stats.Median))
		if f.Stats.N > 1 {
			fmt.Fprintf(&b, " (p95 %s)", FormatNumber(f.Stats.P95))
		}
		if f.RatioToBaseline != nil && name != Baseline {
			fmt.Fprintf(&b, " %s", FormatRatio(*f.RatioToBaseline))
		}
		if f.Accelerator != "" {
			fmt.Fprintf(&b, " · %s", f.Accelerator)
		}
		if len(f.Errors) > 0 {
			fmt.Fprintf(&b, " %s", notes.add(fmt.Sprintf("%s, %s: %d of %d attempts failed: %s",
				name, m.Title, len(f.Errors), len(f.Errors)+f.Stats.N, f.Errors[len(f.Errors)-1])))
		}
		return b.String()
	case f.Status == StatusAbsent:
		why := "the runtime could not run here"
		if rt != nil && rt.Absent != "" {
			why = rt.Absent
		}
		return "absent " + notes.add(name+" is absent: "+why)
	case f.Status == StatusSkipped:
		if f.Note != "" {
			return "skipped " + notes.add(fmt.Sprintf("%s, %s: skipped: %s", name, m.Title, f.Note))
		}
		return "skipped"
	default:
		why := "no sample"
		if len(f.Errors) > 0 {
			why = f.Errors[len(f.Errors)-1]
		}
		acc := ""
		if f.Accelerator != "" {
			acc = " · " + f.Accelerator
		}
		return "not supported yet" + acc + " " + notes.add(fmt.Sprintf("%s, %s: %s", name, m.Title, why))
	}
}

// footnotes collects the long texts (errors) a table cell refers to; equal
// texts share one number.
type footnotes struct {
	texts []string
	index map[string]int
}

func (n *footnotes) add(text string) string {
	text = oneLine(text)
	if n.index == nil {
		n.index = map[string]int{}
	}
	i, ok := n.index[text]
	if !ok {
		n.texts = append(n.texts, text)
		i = len(n.texts)
		n.index[text] = i
	}
	return fmt.Sprintf("[%d]", i)
}

// oneLine folds text into one Markdown-safe line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.ReplaceAll(s, "|", `\|`)
}

// Markdown renders the results as a Markdown document: a header naming the
// machine and the runtimes, one table row per metric (median, p95, ratio to
// runc and accelerator in every cell) and the footnotes.
func (r *Results) Markdown() string {
	var b strings.Builder
	title := "gondolin-bench"
	if r.Quick {
		title += " (quick smoke run: small sizes, few runs; not for comparison)"
	}
	fmt.Fprintf(&b, "# %s\n\n", title)
	fmt.Fprintf(&b, "- when: %s → %s (UTC)\n", r.Started.UTC().Format("2006-01-02 15:04:05"), r.Finished.UTC().Format("15:04:05"))
	dirty := ""
	if r.Git.Dirty {
		dirty = " (with uncommitted changes)"
	}
	fmt.Fprintf(&b, "- commit: %s%s\n", r.Git.Commit, dirty)
	fmt.Fprintf(&b, "- host: %s, %d CPUs (%s), %d MiB, kernel %s, load average at start %s\n",
		r.Host.Hostname, r.Host.CPUs, r.Host.CPUModel, r.Host.MemoryMiB, r.Host.Kernel, r.Host.LoadAvg)
	fmt.Fprintf(&b, "- KVM: %s\n", r.Host.KVM)
	fmt.Fprintf(&b, "- containerd: %s\n", r.Host.Containerd)
	fmt.Fprintf(&b, "- runs: %d per runtime for start, exec and the pod times, %d for the other jobs (and the pod memory); runtimes alternate run by run\n",
		r.Config.Runs, r.Config.IORuns)
	if len(r.WorkloadSeconds) > 0 {
		names := make([]string, 0, len(r.WorkloadSeconds))
		for n := range r.WorkloadSeconds {
			names = append(names, n)
		}
		sort.Slice(names, func(i, j int) bool { return names[i] < names[j] })
		var parts []string
		for _, n := range names {
			parts = append(parts, fmt.Sprintf("%s %.0f s", n, r.WorkloadSeconds[n]))
		}
		fmt.Fprintf(&b, "- wall time per workload: %s; session %.0f s\n", strings.Join(parts, ", "), r.Finished.Sub(r.Started).Seconds())
	}
	b.WriteString("\nRuntimes:\n\n")
	for _, rt := range r.Runtimes {
		fmt.Fprintf(&b, "- **%s** (%s", rt.Name, rt.RuntimeType)
		if rt.Version != "" {
			fmt.Fprintf(&b, ", %s", rt.Version)
		}
		fmt.Fprintf(&b, "): accelerator %s", rt.Accelerator)
		if rt.How != "" {
			fmt.Fprintf(&b, "; %s", rt.How)
		}
		if rt.Absent != "" {
			fmt.Fprintf(&b, "; **absent**: %s", oneLine(rt.Absent))
		}
		b.WriteString("\n")
		for _, n := range rt.Notes {
			fmt.Fprintf(&b, "  - %s\n", oneLine(n))
		}
	}

	b.WriteString("\nEach cell: median (p95) ×ratio to runc's median · accelerator. ")
	b.WriteString("For lower-is-better rows a ratio above 1 is slower than runc; for higher-is-better rows below 1 is slower.\n\n")
	var notes footnotes
	b.WriteString("| workload | unit | better |")
	for _, rt := range r.Runtimes {
		fmt.Fprintf(&b, " %s |", rt.Name)
	}
	b.WriteString("\n|---|---|---|")
	for range r.Runtimes {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	group := ""
	for _, m := range r.Metrics {
		if m.Group != group {
			group = m.Group
			fmt.Fprintf(&b, "| **%s** | | |", oneLine(group))
			for range r.Runtimes {
				b.WriteString(" |")
			}
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "| %s | %s | %s |", oneLine(m.Title), m.Unit, m.Better)
		for _, rt := range r.Runtimes {
			fmt.Fprintf(&b, " %s |", cell(m, rt.Name, m.Results[rt.Name], rt, &notes))
		}
		b.WriteString("\n")
	}

	var refs []string
	for _, m := range r.Metrics {
		if m.Reference == nil {
			continue
		}
		line := fmt.Sprintf("- %s, %s: ", m.Title, m.ReferenceName)
		if m.Reference.Stats == nil {
			line += "failed"
			if len(m.Reference.Errors) > 0 {
				line += ": " + oneLine(m.Reference.Errors[len(m.Reference.Errors)-1])
			}
		} else {
			line += fmt.Sprintf("%s %s (p95 %s)", FormatNumber(m.Reference.Stats.Median), m.Unit, FormatNumber(m.Reference.Stats.P95))
			for _, rt := range r.Runtimes {
				if f := m.Results[rt.Name]; f != nil && f.RatioToReference != nil {
					line += fmt.Sprintf("; %s %s of it", rt.Name, FormatRatio(*f.RatioToReference))
				}
			}
		}
		refs = append(refs, line)
	}
	if len(refs) > 0 {
		b.WriteString("\nReferences (no container):\n\n")
		b.WriteString(strings.Join(refs, "\n"))
		b.WriteString("\n")
	}
	var details []string
	for _, m := range r.Metrics {
		for _, rt := range r.Runtimes {
			if f := m.Results[rt.Name]; f != nil && f.Stats != nil && f.Note != "" {
				details = append(details, fmt.Sprintf("- %s, %s: %s", m.Label(), rt.Name, oneLine(f.Note)))
			}
		}
	}
	if len(details) > 0 {
		// The memory figures' notes split the PSS by process.
		b.WriteString("\nPer figure (memory: PSS by host process, of the last sample):\n\n")
		b.WriteString(strings.Join(details, "\n"))
		b.WriteString("\n")
	}
	if len(r.Goals) > 0 {
		b.WriteString("\nRatios between figures (medians):\n\n")
		for _, g := range r.Goals {
			fmt.Fprintf(&b, "- %s: %s\n", oneLine(g.Title), r.goalText(g))
		}
	}
	if len(notes.texts) > 0 {
		b.WriteString("\nNotes:\n\n")
		for i, t := range notes.texts {
			fmt.Fprintf(&b, "%d. %s\n", i+1, t)
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", oneLine(n))
		}
	}
	b.WriteString(r.startPhasesMarkdown())
	return b.String()
}

// goalText is a goal's value, target and the two figures it comes from.
func (r *Results) goalText(g *Goal) string {
	side := func(ref FigureRef) string {
		m, f := r.figure(ref)
		who := ref.Runtime
		if ref.Runtime == "" {
			who = "reference"
			if m != nil && m.ReferenceName != "" {
				who = m.ReferenceName
			}
		}
		what := ref.Metric
		if m != nil {
			what = m.Label()
		}
		if f == nil || f.Stats == nil {
			return fmt.Sprintf("%s, %s: no figure", what, who)
		}
		return fmt.Sprintf("%s, %s: %s %s", what, who, FormatNumber(f.Stats.Median), m.Unit)
	}
	var b strings.Builder
	if g.Value == nil {
		b.WriteString("n/a")
	} else {
		fmt.Fprintf(&b, "**%.0f %%**", *g.Value*100)
	}
	if g.Target > 0 {
		op := "≥"
		if g.better(r.Metric(g.Num.Metric)) == LowerIsBetter {
			op = "≤"
		}
		fmt.Fprintf(&b, " (goal %s %.0f %%", op, g.Target*100)
		if g.Met != nil {
			if *g.Met {
				b.WriteString(": met")
			} else {
				b.WriteString(": not met")
			}
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, " = %s / %s", side(g.Num), side(g.Den))
	return b.String()
}
