package boot

import "testing"

func TestParseUptimeMillis(t *testing.T) {
	for in, want := range map[string]uint64{"1.23 4.56\n": 1230, "0.00 0.00": 0, "12345.67 1.0": 12345670} {
		got, err := ParseUptimeMillis(in)
		if err != nil || got != want {
			t.Errorf("ParseUptimeMillis(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x y"} {
		if _, err := ParseUptimeMillis(bad); err == nil {
			t.Errorf("ParseUptimeMillis(%q) accepted", bad)
		}
	}
}

func TestHasKernelArg(t *testing.T) {
	cmdline := "console=ttyS0 quiet gondolin.debug=1 panic=-1\n"
	if !HasKernelArg(cmdline, "gondolin.debug=1") || !HasKernelArg(cmdline, "panic=-1") {
		t.Errorf("HasKernelArg misses a word of %q", cmdline)
	}
	if HasKernelArg(cmdline, "gondolin.debug") || HasKernelArg("xgondolin.debug=1", "gondolin.debug=1") {
		t.Error("HasKernelArg matched part of a word")
	}
}
