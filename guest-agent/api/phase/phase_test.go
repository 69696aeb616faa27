package phase

import (
	"strings"
	"testing"
	"time"
)

func TestTimer(t *testing.T) {
	tm := Start()
	time.Sleep(5 * time.Millisecond)
	if d := tm.Done("first"); d < 5*time.Millisecond {
		t.Fatalf("first took %s", d)
	}
	tm.Done("second")
	steps := tm.Steps()
	if len(steps) != 2 || steps[0].Name != "first" || steps[1].Name != "second" || steps[1].Took > steps[0].Took {
		t.Fatalf("steps %+v", steps)
	}
	if s := tm.String(); !strings.HasPrefix(s, "first ") || !strings.Contains(s, "ms, second ") {
		t.Fatalf("String = %q", s)
	}
	if tm.Total() < steps[0].Took+steps[1].Took {
		t.Fatalf("Total %s shorter than the steps", tm.Total())
	}
}
