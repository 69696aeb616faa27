package report

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
)

// palette colours the runtimes other than the baseline, in order.
var palette = []color.Color{
	color.RGBA{R: 0xe6, G: 0x7e, B: 0x22, A: 0xff}, // orange
	color.RGBA{R: 0x2e, G: 0x6d, B: 0xb4, A: 0xff}, // blue
	color.RGBA{R: 0x3a, G: 0x9d, B: 0x5d, A: 0xff}, // green
	color.RGBA{R: 0x8e, G: 0x44, B: 0xad, A: 0xff}, // purple
}

// Cost is how much worse than runc a figure is: the ratio to runc for
// lower-is-better metrics, its inverse for higher-is-better ones, so that
// above 1 always means worse. ok is false without a ratio.
func Cost(m *Metric, f *Figure) (float64, bool) {
	if f == nil || f.RatioToBaseline == nil || *f.RatioToBaseline <= 0 {
		return 0, false
	}
	if m.Better == HigherIsBetter {
		return 1 / *f.RatioToBaseline, true
	}
	return *f.RatioToBaseline, true
}

// ChartTitle is the chart's title line: what it shows and with which accelerators.
func (r *Results) ChartTitle() string {
	var acc []string
	for _, rt := range r.Runtimes {
		if rt.Name != Baseline {
			acc = append(acc, rt.Name+": "+rt.Accelerator)
		}
	}
	t := fmt.Sprintf("Cost relative to runc (median; log scale, right = worse)  [%s]", strings.Join(acc, ", "))
	if r.Quick {
		t += "  QUICK RUN"
	}
	return t
}

// WriteChart draws a horizontal bar chart: one row per metric, one bar per
// runtime other than runc, each bar log₂ of its cost relative to runc (so
// runc is the zero line, left is better, right is worse). A metric a runtime
// could not measure gets the text "n/a" instead of a bar.
func (r *Results) WriteChart(w io.Writer) error {
	var others []*Runtime
	for _, rt := range r.Runtimes {
		if rt.Name != Baseline {
			others = append(others, rt)
		}
	}
	n := len(r.Metrics)
	if n == 0 {
		return fmt.Errorf("no metrics to chart")
	}
	p := plot.New()
	p.Title.Text = r.ChartTitle()
	p.X.Label.Text = "cost relative to runc (×, log scale); runc = 1×"
	p.Legend.Top = true
	p.Legend.Left = false

	names := make([]string, n)
	for i, m := range r.Metrics {
		// The first metric goes at the top.
		names[n-1-i] = m.Label()
	}
	groupWidth := vg.Points(16)
	barWidth := groupWidth / vg.Length(max(len(others), 1))
	lo, hi := 0.0, 0.0
	for k, rt := range others {
		vals := make(plotter.Values, n)
		var missing plotter.XYLabels
		var labels, negLabels plotter.XYLabels
		for i, m := range r.Metrics {
			y := float64(n - 1 - i)
			f := m.Results[rt.Name]
			cost, ok := Cost(m, f)
			if !ok {
				missing.XYs = append(missing.XYs, plotter.XY{X: 0, Y: y})
				missing.Labels = append(missing.Labels, rt.Name+": n/a")
				continue
			}
			v := math.Log2(cost)
			vals[n-1-i] = v
			lo, hi = min(lo, v), max(hi, v)
			l := &labels
			if v < 0 {
				l = &negLabels
			}
			l.XYs = append(l.XYs, plotter.XY{X: v, Y: y})
			l.Labels = append(l.Labels, FormatRatio(*f.RatioToBaseline))
		}
		bars, err := plotter.NewBarChart(vals, barWidth)
		if err != nil {
			return err
		}
		bars.Horizontal = true
		bars.Color = palette[k%len(palette)]
		bars.LineStyle.Width = 0
		// The first runtime on top.
		bars.Offset = groupWidth/2 - barWidth*vg.Length(k) - barWidth/2
		p.Add(bars)
		p.Legend.Add(rt.Name+" ("+rt.Accelerator+")", bars)
		offset := vg.Point{Y: bars.Offset - vg.Points(3)}
		for _, side := range []struct {
			labels plotter.XYLabels
			align  text.XAlignment
			dx     vg.Length
		}{{labels, text.XLeft, vg.Points(3)}, {negLabels, text.XRight, -vg.Points(3)}} {
			if len(side.labels.XYs) == 0 {
				continue
			}
			l, err := plotter.NewLabels(side.labels)
			if err != nil {
				return err
			}
			for i := range l.TextStyle {
				l.TextStyle[i].Font.Size = vg.Points(7)
				l.TextStyle[i].XAlign = side.align
			}
			l.Offset = offset.Add(vg.Point{X: side.dx})
			p.Add(l)
		}
		if len(missing.XYs) > 0 {
			l, err := plotter.NewLabels(missing)
			if err != nil {
				return err
			}
			for i := range l.TextStyle {
				l.TextStyle[i].Font.Size = vg.Points(7)
				l.TextStyle[i].Color = color.Gray{Y: 0x80}
			}
			l.Offset = offset.Add(vg.Point{X: vg.Points(3)})
			p.Add(l)
		}
	}
	zero, err := plotter.NewLine(plotter.XYs{{X: 0, Y: -0.5}, {X: 0, Y: float64(n) - 0.5}})
	if err != nil {
		return err
	}
	zero.LineStyle.Width = vg.Points(1)
	zero.LineStyle.Color = color.Black
	p.Add(zero)
	p.Legend.Add("runc = 1×", zero)

	// Room on the right for the legend.
	lo, hi = math.Floor(lo)-1, math.Ceil(hi)+4
	p.X.Min, p.X.Max = lo, hi
	p.X.Tick.Marker = plot.TickerFunc(func(min, max float64) []plot.Tick {
		var ticks []plot.Tick
		for v := math.Ceil(min); v <= max; v++ {
			ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(math.Exp2(v), 'g', 4, 64) + "×"})
		}
		return ticks
	})
	p.NominalY(names...)
	p.Add(plotter.NewGrid())

	h := vg.Inch + vg.Length(n)*groupWidth*1.6
	wt, err := p.WriterTo(11*vg.Inch, h, "png")
	if err != nil {
		return err
	}
	_, err = wt.WriteTo(w)
	return err
}

// WriteChartFile writes the chart to path as PNG.
func (r *Results) WriteChartFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := r.WriteChart(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
