package runtime

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/log"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// Ingress: every TCP port the guest listens on (on any address but
// loopback) gets a listener on the same port in the container's network
// namespace, which forwards connections into the guest through the
// userspace network; every UDP port a guest socket is bound to gets a
// socket there that relays datagrams, one flow per client. So a published port (Docker's -p, which DNATs to the
// container's address in that namespace) and other containers on the same
// network reach the guest's server, as they would a runc container's.

// listenersPoll bounds one WaitListeners call: the agent learns of the
// deadline and returns, so no call outlives the container for long.
const listenersPoll = 30 * time.Second

// publishListeners follows the guest's listening ports until the container
// stops or its VM goes away.
func (c *Container) publishListeners() {
	ctx, cancel := c.runningContext()
	defer cancel()
	entry := log.G(ctx).WithField("container", c.ID)
	pub := &publisher{c: c, entry: entry, tcp: map[uint16]io.Closer{}, udp: map[uint16]io.Closer{}}
	defer pub.closeAll()
	var generation uint64
	for ctx.Err() == nil {
		callCtx, callCancel := context.WithTimeout(ctx, listenersPoll)
		resp, err := c.sb.agent.WaitListeners(callCtx, &api.WaitListenersRequest{Generation: generation})
		callCancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if callCtx.Err() == nil {
				// Not the poll's deadline: the agent failed; retry later.
				entry.WithError(agentError(err)).Debug("wait for guest listeners")
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
			continue
		}
		generation = resp.Generation
		pub.reconcile(ctx, resp.TcpPorts, resp.UdpPorts)
	}
}

// publisher holds the namespace-side sockets of one container.
type publisher struct {
	c     *Container
	entry *log.Entry
	mu    sync.Mutex
	tcp   map[uint16]io.Closer
	udp   map[uint16]io.Closer
}

// reconcile publishes every port in tcp and udp and stops publishing
// others.
func (p *publisher) reconcile(ctx context.Context, tcp, udp []uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reconcileSet(p.tcp, tcp, "TCP", func(port uint16) (io.Closer, error) {
		ln, err := p.listen(port)
		if err != nil {
			return nil, err
		}
		go p.serve(ctx, ln, port)
		return ln, nil
	})
	p.reconcileSet(p.udp, udp, "UDP", func(port uint16) (io.Closer, error) {
		return p.relayUDP(ctx, port)
	})
}

func (p *publisher) reconcileSet(have map[uint16]io.Closer, ports []uint32, proto string, open func(uint16) (io.Closer, error)) {
	want := map[uint16]bool{}
	for _, port := range ports {
		want[uint16(port)] = true
	}
	for port, c := range have {
		if !want[port] {
			c.Close()
			delete(have, port)
		}
	}
	for port := range want {
		if _, ok := have[port]; ok {
			continue
		}
		c, err := open(port)
		if err != nil {
			p.entry.WithError(err).Warnf("cannot publish guest %s port %d in the container's network namespace", proto, port)
			continue
		}
		have[port] = c
	}
}

// listen listens on port on every address of the container's namespace.
func (p *publisher) listen(port uint16) (net.Listener, error) {
	var ln net.Listener
	err := p.c.netns.do(func() error {
		var err error
		ln, err = net.Listen("tcp", wildcard(port))
		return err
	})
	return ln, err
}

// wildcard is port on every address.
func wildcard(port uint16) string {
	return net.JoinHostPort("", strconv.Itoa(int(port)))
}

func (p *publisher) serve(ctx context.Context, ln net.Listener, port uint16) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go p.forward(ctx, conn, port)
	}
}

// forward joins a namespace-side connection to a new one into the guest.
func (p *publisher) forward(ctx context.Context, outside net.Conn, port uint16) {
	defer outside.Close()
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	inside, err := p.c.net.policy.DialGuest(dialCtx, port)
	cancel()
	if err != nil {
		p.entry.WithError(err).Debug("ingress connection refused by the guest")
		return
	}
	defer inside.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Pass the end of one direction on as a half-close, so
		// request/response protocols that close their side still work.
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(inside, outside)
	go pipe(outside, inside)
	select {
	case <-done:
		<-done
	case <-ctx.Done():
	}
}

func (p *publisher) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, set := range []map[uint16]io.Closer{p.tcp, p.udp} {
		for port, c := range set {
			if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				p.entry.WithError(err).Debugf("close the socket of port %d", port)
			}
			delete(set, port)
		}
	}
}
