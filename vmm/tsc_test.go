package vmm

import (
	"testing"
	"time"
)

func TestMeasureTSCAgrees(t *testing.T) {
	if !haveTSC || !invariantTSC() {
		t.Skip("no invariant TSC on this host")
	}
	a, b := measureTSC(5*time.Millisecond), measureTSC(20*time.Millisecond)
	if a < 100_000 || b < 100_000 {
		t.Fatalf("implausible TSC frequency: %d kHz, %d kHz", a, b)
	}
	// Two measurements agree within 0.5 % (a loaded CI host is noisy).
	if diff := int64(a) - int64(b); diff*200 > int64(b) || -diff*200 > int64(b) {
		t.Errorf("5 ms gives %d kHz, 20 ms gives %d kHz", a, b)
	}
	if HostTSCKHz() == 0 {
		t.Error("HostTSCKHz is 0 on a host with an invariant TSC")
	}
}
