// Package phase times the steps of a long operation for its log line: the
// host's container create, start and stop (runtime) and the guest's part of
// a create (the agent's container manager). It lives beside the agent API
// because both sides use it and the agent imports no package of the host.
package phase

import (
	"fmt"
	"strings"
	"time"
)

// Timer records how long each step took since the one before.
type Timer struct {
	start, last time.Time
	steps       []Step
}

// Step is one timed step.
type Step struct {
	Name string
	Took time.Duration
}

// Start returns a timer whose first step starts now.
func Start() *Timer {
	now := time.Now()
	return &Timer{start: now, last: now}
}

// Done records the time since the previous step (or the start) under name
// and returns it.
func (t *Timer) Done(name string) time.Duration {
	now := time.Now()
	took := now.Sub(t.last)
	t.last = now
	t.steps = append(t.steps, Step{Name: name, Took: took})
	return took
}

// Total is the time since the start.
func (t *Timer) Total() time.Duration { return time.Since(t.start) }

// Steps returns the steps recorded so far, in order.
func (t *Timer) Steps() []Step { return t.steps }

// String lists the steps as "rootfs 3ms, mounts 1ms".
func (t *Timer) String() string {
	parts := make([]string, len(t.steps))
	for i, s := range t.steps {
		parts[i] = fmt.Sprintf("%s %dms", s.Name, s.Took.Milliseconds())
	}
	return strings.Join(parts, ", ")
}
