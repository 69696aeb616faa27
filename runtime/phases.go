package runtime

import (
	"time"

	"github.com/containerd/log"
)

// phases times the steps of a container's start, for the shim log: where
// the time to first instruction goes is what start-time work is guided by.
type phases struct {
	last   time.Time
	fields log.Fields
}

func newPhases() *phases {
	return &phases{last: time.Now(), fields: log.Fields{}}
}

// done records the time since the previous step under name, in ms.
func (p *phases) done(name string) {
	now := time.Now()
	p.fields[name+"_ms"] = now.Sub(p.last).Milliseconds()
	p.last = now
}
