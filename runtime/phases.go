package runtime

import (
	"github.com/containerd/log"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api/phase"
)

// phases times the steps of a container's start, for the shim log: where
// the time to first instruction goes is what start-time work is guided by.
// The timer is the agent's too (phase.Timer); the shim logs each step as a
// field.
type phases struct {
	timer  *phase.Timer
	fields log.Fields
}

func newPhases() *phases {
	return &phases{timer: phase.Start(), fields: log.Fields{}}
}

// done records the time since the previous step under name, in ms.
func (p *phases) done(name string) {
	p.fields[name+"_ms"] = p.timer.Done(name).Milliseconds()
}
