package runtime

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"
)

// udpFlowIdle ends a UDP ingress flow its client has not used for this
// long, as a NAT forgets an idle UDP mapping.
const udpFlowIdle = 60 * time.Second

// udpRelay is the namespace-side socket of one guest UDP port: each client
// address gets its own flow into the guest, whose replies go back to that
// client from the published port.
type udpRelay struct {
	p     *publisher
	port  uint16
	conn  net.PacketConn
	mu    sync.Mutex
	flows map[string]net.Conn
}

// relayUDP binds port on every address of the container's namespace and
// relays its datagrams into the guest until closed.
func (p *publisher) relayUDP(ctx context.Context, port uint16) (*udpRelay, error) {
	var pc net.PacketConn
	err := p.c.pod.netns.do(func() error {
		var err error
		pc, err = net.ListenPacket("udp", wildcard(port))
		return err
	})
	if err != nil {
		return nil, err
	}
	r := &udpRelay{p: p, port: port, conn: pc, flows: map[string]net.Conn{}}
	go r.serve(ctx)
	return r, nil
}

func (r *udpRelay) serve(ctx context.Context) {
	buf := make([]byte, 65535)
	for {
		n, from, err := r.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		flow, err := r.flow(ctx, from)
		if err != nil {
			r.p.entry.WithError(err).Debug("UDP ingress")
			continue
		}
		_ = flow.SetReadDeadline(time.Now().Add(udpFlowIdle))
		if _, err := flow.Write(buf[:n]); err != nil {
			r.p.entry.WithError(err).Debug("UDP ingress: write into the guest")
		}
	}
}

// flow returns the client's flow into the guest, opening it (and the
// goroutine carrying its replies back) on the client's first datagram.
func (r *udpRelay) flow(ctx context.Context, client net.Addr) (net.Conn, error) {
	key := client.String()
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.flows[key]; ok {
		return f, nil
	}
	if r.flows == nil {
		return nil, net.ErrClosed
	}
	// Each flow is an endpoint in the userspace network and a goroutine:
	// clients past limits.udp_flows (all relays of the container
	// together) are dropped until a flow ends.
	if r.p.udpFlows.Add(1) > r.p.maxUDPFlows {
		r.p.udpFlows.Add(-1)
		return nil, fmt.Errorf("UDP ingress from %s to port %d dropped: %d flows already (limits.udp_flows)", client, r.port, r.p.maxUDPFlows)
	}
	f, err := r.p.dialGuestUDP(r.port)
	if err != nil {
		r.p.udpFlows.Add(-1)
		return nil, err
	}
	r.flows[key] = f
	go r.replies(ctx, client, f)
	return f, nil
}

// replies sends what the guest answers on flow back to client, until the
// flow has been idle for udpFlowIdle (each datagram from the client
// extends the deadline) or the relay closes.
func (r *udpRelay) replies(ctx context.Context, client net.Addr, flow net.Conn) {
	defer func() {
		r.p.udpFlows.Add(-1)
		r.mu.Lock()
		if r.flows != nil && r.flows[client.String()] == flow {
			delete(r.flows, client.String())
		}
		r.mu.Unlock()
		flow.Close()
	}()
	buf := make([]byte, 65535)
	for ctx.Err() == nil {
		n, err := flow.Read(buf)
		if err != nil {
			return // idle past its deadline, or closed
		}
		if _, err := r.conn.WriteTo(buf[:n], client); err != nil {
			return
		}
	}
}

// Close stops relaying the port and ends its flows.
func (r *udpRelay) Close() error {
	r.mu.Lock()
	flows := r.flows
	r.flows = nil
	r.mu.Unlock()
	for _, f := range flows {
		f.Close()
	}
	return r.conn.Close()
}
