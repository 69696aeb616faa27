// Package report holds the benchmark's figures, their statistics, and the three
// forms they are written in: results.json, results.md and a PNG chart.
package report

import (
	"math"
	"slices"
)

// Quantile returns the q-quantile (0 ≤ q ≤ 1) of xs by linear interpolation
// between the closest ranks (the "type 7" estimator of R and NumPy's default):
// with xs sorted, h = (n-1)·q and the result lies between xs[⌊h⌋] and xs[⌈h⌉].
// It returns NaN for an empty slice or a q outside [0, 1]. xs is not modified.
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 || q < 0 || q > 1 || math.IsNaN(q) {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	h := float64(len(s)-1) * q
	lo := int(math.Floor(h))
	hi := int(math.Ceil(h))
	return s[lo] + (h-float64(lo))*(s[hi]-s[lo])
}

// Median is the 0.5-quantile: the middle value, or the mean of the two middle
// values for an even count.
func Median(xs []float64) float64 { return Quantile(xs, 0.5) }

// P95 is the 0.95-quantile. With 10 samples it lies between the 9th and the
// 10th smallest (at 55 % of the way); with fewer than 2 it is the only sample.
func P95(xs []float64) float64 { return Quantile(xs, 0.95) }

// Mean is the arithmetic mean, NaN for no samples.
func Mean(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// Ratio returns v/base, and false when it is not defined (base not a positive
// finite number, or v not finite).
func Ratio(v, base float64) (float64, bool) {
	if base <= 0 || math.IsNaN(base) || math.IsInf(base, 0) || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false
	}
	return v / base, true
}
