package vmm

import (
	"os"
	"strings"
	"sync"
	"time"
)

var (
	tscOnce sync.Once
	tscKHz  uint64
)

// HostTSCKHz is the host's time stamp counter frequency in kHz, measured
// once per process against the monotonic clock (5 ms), or 0 when the host
// TSC is not invariant (no constant_tsc and nonstop_tsc in /proc/cpuinfo)
// or this is not x86-64.
//
// Under TCG the guest's TSC runs at the host's rate. Telling the guest kernel
// (tsc_early_khz=) spares it calibrating against the emulated PIT, which
// under emulation is slow and fails now and then — leaving the guest on the
// jiffies clock.
func HostTSCKHz() uint64 {
	tscOnce.Do(func() {
		if !haveTSC || !invariantTSC() {
			return
		}
		tscKHz = measureTSC(5 * time.Millisecond)
	})
	return tscKHz
}

func invariantTSC() bool {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		f := " " + val + " "
		return strings.Contains(f, " constant_tsc ") && strings.Contains(f, " nonstop_tsc ")
	}
	return false
}

// measureTSC counts TSC ticks over about d of monotonic time. Each end takes
// the tightest of a few (clock, TSC) readings, so a preemption between the
// two reads does not skew the result.
func measureTSC(d time.Duration) uint64 {
	sample := func() (time.Time, uint64) {
		var bestT time.Time
		var bestC uint64
		bestW := time.Duration(1 << 62)
		for i := 0; i < 8; i++ {
			t0 := time.Now()
			c := rdtsc()
			t1 := time.Now()
			if w := t1.Sub(t0); w < bestW {
				bestW, bestT, bestC = w, t0.Add(w/2), c
			}
		}
		return bestT, bestC
	}
	t0, c0 := sample()
	time.Sleep(d)
	t1, c1 := sample()
	ns := t1.Sub(t0).Nanoseconds()
	if ns <= 0 || c1 <= c0 {
		return 0
	}
	return (c1 - c0) * 1_000_000 / uint64(ns)
}
