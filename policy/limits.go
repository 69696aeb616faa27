package policy

import (
	"fmt"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// The bounds on what a guest can make the shim hold (oci.Limits, the
// runtime config's [limits]). Past each the shim refuses the extra work
// and says so in the audit log once, then once per limitNoticeEvery while
// refusals go on, with their count.

// limitNoticeEvery is how often a limit that keeps refusing is reported.
const limitNoticeEvery = 10 * time.Second

// limitNotice reports one limit's refusals.
type limitNotice struct {
	mu    sync.Mutex
	count int
	timer *time.Timer
}

// refused notes one refusal of what (e.g. "TCP flows") past limits.key =
// value: the first of a run is audited at once, the rest summarised.
func (n *Network) refused(l *limitNotice, key string, value int, what string, rec AuditRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timer != nil {
		l.count++
		return
	}
	n.audit(rec.deny(fmt.Sprintf("limits.%s = %d reached: %s refused (further refusals are summarised every %s)", key, value, what, limitNoticeEvery)))
	var flush func()
	flush = func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.count == 0 || n.ctx.Err() != nil {
			l.timer = nil
			return
		}
		n.audit(AuditRecord{Protocol: rec.Protocol}.deny(fmt.Sprintf("limits.%s = %d: %d more %s refused in the last %s", key, value, l.count, what, limitNoticeEvery)))
		l.count = 0
		l.timer = time.AfterFunc(limitNoticeEvery, flush)
	}
	l.timer = time.AfterFunc(limitNoticeEvery, flush)
}

// flowLimit counts the guest's established TCP flows.
type flowLimit struct {
	mu     sync.Mutex
	max    int
	n      int
	notice limitNotice
}

// acquire takes a slot and returns the function that gives it back (safe
// to call more than once), or nil past the limit.
func (l *flowLimit) acquire() func() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n >= l.max {
		return nil
	}
	l.n++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.n--
			l.mu.Unlock()
		})
	}
}

func (l *flowLimit) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// countedEndpoint gives a flow's slot back when its guest side is closed,
// whichever path (relay, DNS, HTTP server, WebSocket) closes it.
type countedEndpoint struct {
	tcpip.Endpoint
	release func()
}

func (e *countedEndpoint) Close() {
	e.Endpoint.Close()
	e.release()
}
