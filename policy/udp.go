package policy

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const udpIdleTimeout = 60 * time.Second

// udpFlow is one guest UDP flow (DNS or relayed) in the udpTable.
type udpFlow struct {
	conn net.Conn // nil while it is being set up
	last time.Time
	busy int // DNS questions being answered
}

// udpTable bounds the guest's UDP flows to Limits.UDPFlows. A guest
// resolver sends each query from a new source port, so every query is a
// new flow: when the table is full the least recently active idle flow is
// closed to make room (its next datagram opens a new one), and only when
// every flow is busy is the new one refused.
type udpTable struct {
	mu     sync.Mutex
	max    int
	flows  map[*udpFlow]struct{}
	notice limitNotice
}

// reserve takes a place for a new flow, evicting the stalest idle one if
// the table is full; nil when none can be had.
func (t *udpTable) reserve(now time.Time) *udpFlow {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.flows == nil {
		t.flows = map[*udpFlow]struct{}{}
	}
	if len(t.flows) >= t.max {
		var victim *udpFlow
		for f := range t.flows {
			if f.conn != nil && f.busy == 0 && (victim == nil || f.last.Before(victim.last)) {
				victim = f
			}
		}
		if victim == nil {
			return nil
		}
		delete(t.flows, victim)
		// Closing ends the flow's goroutine, which removes nothing more.
		go victim.conn.Close()
	}
	f := &udpFlow{last: now}
	t.flows[f] = struct{}{}
	return f
}

func (t *udpTable) start(f *udpFlow, conn net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f.conn = conn
}

func (t *udpTable) remove(f *udpFlow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.flows, f)
}

// touch notes activity on f; busy changes its count of questions being
// answered.
func (t *udpTable) touch(f *udpFlow, busy int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f.last = time.Now()
	f.busy += busy
}

func (t *udpTable) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.flows)
}

// udpFlowFor reserves a place in the table for a new flow, reporting the
// refusal when there is none.
func (n *Network) udpFlowFor(rec AuditRecord) *udpFlow {
	f := n.udpFlows.reserve(time.Now())
	if f == nil {
		n.refused(&n.udpFlows.notice, "udp_flows", n.udpFlows.max, "new UDP flows", rec)
	}
	return f
}

// handleUDP is called for the first datagram of every guest UDP flow: it
// carries out DecideUDP (a refusal makes the stack answer ICMP port
// unreachable).
func (n *Network) handleUDP(r *udp.ForwarderRequest) bool {
	id := r.ID()
	dst := netip.AddrPortFrom(fromTCPIP(id.LocalAddress), id.LocalPort)
	rec := AuditRecord{Protocol: "udp", Host: dst.Addr().String(), Port: dst.Port(), Dest: dst.String()}
	d := n.policy.DecideUDP(n.facts, dst)
	if d.Action == UDPRefuse {
		if !d.Quiet && n.udpSeen.first(dst.String()) {
			n.audit(rec.deny(d.auditReason()))
		}
		return false
	}
	if d.Name != "" {
		rec.Host = d.Name
	}
	uf := n.udpFlowFor(rec)
	if uf == nil {
		return false
	}
	conn, ok := n.acceptUDP(r)
	if !ok {
		n.udpFlows.remove(uf)
		return true
	}
	n.udpFlows.start(uf, conn)
	if d.Action == UDPDNS {
		go n.serveDNSUDP(conn, uf)
	} else {
		go n.relayUDP(conn, uf, dst, d.Name, rec)
	}
	return true
}

func (n *Network) acceptUDP(r *udp.ForwarderRequest) (*gonet.UDPConn, bool) {
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	if err != nil {
		return nil, false
	}
	return gonet.NewUDPConn(&wq, ep), true
}

func (n *Network) relayUDP(guest *gonet.UDPConn, uf *udpFlow, dst netip.AddrPort, name string, rec AuditRecord) {
	defer n.udpFlows.remove(uf)
	defer guest.Close()
	ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
	addrs, err := n.policy.UDPAddrs(ctx, n.facts, dst, name)
	if err != nil {
		cancel()
		n.audit(rec.deny(err.Error()))
		return
	}
	up, err := n.cfg.Dialer(ctx, "udp", netip.AddrPortFrom(addrs[0], dst.Port()).String())
	cancel()
	if err != nil {
		n.audit(rec.deny("dial failed: " + err.Error()))
		return
	}
	defer up.Close()
	n.audit(rec.allow("net.mode=open"))
	stop := context.AfterFunc(n.ctx, func() {
		guest.Close()
		up.Close()
	})
	defer stop()
	done := make(chan struct{})
	go func() {
		copyDatagrams(guest, up, nil)
		close(done)
	}()
	copyDatagrams(up, guest, func() { n.udpFlows.touch(uf, 0) })
	guest.Close()
	up.Close()
	<-done
}

// copyDatagrams copies datagrams until a read fails or the flow has been
// idle for udpIdleTimeout, calling touch (if set) for each.
func copyDatagrams(dst, src net.Conn, touch func()) {
	buf := make([]byte, 65535)
	for {
		src.SetReadDeadline(time.Now().Add(udpIdleTimeout))
		m, err := src.Read(buf)
		if err != nil {
			dst.Close()
			return
		}
		if touch != nil {
			touch()
		}
		if _, err := dst.Write(buf[:m]); err != nil {
			src.Close()
			return
		}
	}
}

// deniedCache rate-limits audit records for refused UDP flows.
type deniedCache struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (d *deniedCache) first(key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	if d.m == nil || len(d.m) > 4096 {
		d.m = map[string]time.Time{}
	}
	if t, ok := d.m[key]; ok && now.Sub(t) < time.Minute {
		return false
	}
	d.m[key] = now
	return true
}
