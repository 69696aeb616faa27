package policy

import (
	"fmt"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// The bounds on what a guest can make the shim hold (Limits, from the
// runtime config's [limits]). Past each the shim refuses the extra work
// and says so in the audit log once, then once per limitNoticeEvery while
// refusals go on, with their count.

// Limits are the bounds the egress policy keeps for one guest; the runtime
// config's [limits] table sets them (docs/configuration.md).
type Limits struct {
	// TCPFlows bounds the guest's concurrent TCP flows (connections being
	// classified, relayed or proxied).
	TCPFlows int
	// UpstreamConnections bounds the host-side connections held open for
	// the guest at once (raw relays and HTTP upstreams together): one
	// guest connection can carry many HTTP/2 streams, each of which could
	// otherwise need its own upstream.
	UpstreamConnections int
	// UDPFlows bounds the guest's concurrent UDP flows (DNS included).
	UDPFlows int
	// DNSInFlight bounds DNS questions being answered at once.
	DNSInFlight int
	// HTTPHeaderBytes bounds one request's header block from the guest;
	// HTTPHeaderTimeout bounds how long the guest may take to send it.
	HTTPHeaderBytes   int
	HTTPHeaderTimeout time.Duration
	// AuditLinesPerSecond caps the audit and log lines the decisions of
	// one guest write.
	AuditLinesPerSecond int
}

// DefaultLimits suit a developer machine and a CI runner alike.
func DefaultLimits() Limits {
	return Limits{
		TCPFlows:            1024,
		UpstreamConnections: 1024,
		UDPFlows:            256,
		DNSInFlight:         64,
		HTTPHeaderBytes:     64 << 10,
		HTTPHeaderTimeout:   30 * time.Second,
		AuditLinesPerSecond: 100,
	}
}

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
