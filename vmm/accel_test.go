package vmm

import (
	"strings"
	"testing"
)

func TestHasVirtFlag(t *testing.T) {
	for _, tc := range []struct {
		name, cpuinfo string
		want          bool
	}{
		{"intel", "processor\t: 0\nflags\t\t: fpu vme vmx sse\n", true},
		{"amd", "flags : fpu svm\n", true},
		{"none", "processor : 0\nflags\t: fpu sse2 hypervisor\n", false},
		{"vmx only in another field", "bugs : vmx_something\nflags : fpu\n", false},
	} {
		if got := hasVirtFlag(strings.NewReader(tc.cpuinfo)); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestDetectAcceleratorExplicit(t *testing.T) {
	for _, a := range []Accelerator{AccelKVM, AccelTCG} {
		got, _, err := DetectAccelerator(a)
		if err != nil || got != a {
			t.Errorf("DetectAccelerator(%s) = %s, %v", a, got, err)
		}
	}
	if _, _, err := DetectAccelerator("hvf"); err == nil || !strings.Contains(err.Error(), "auto, kvm or tcg") {
		t.Errorf("want a clear error for an unknown accelerator, got %v", err)
	}
}
