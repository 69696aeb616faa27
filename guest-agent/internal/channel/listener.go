// Package channel carries the host ↔ agent channel: a transport (the
// virtio-serial port today, vsock later) that yields one connection per host
// session, a yamux server session on it, and a dispatcher that reads the
// api.StreamHeader opening every stream and routes control streams to the
// ttrpc server and stdio streams to a registry where processes pick them up.
package channel

import (
	"net"
	"sync"
)

// Listener is a net.Listener fed by the dispatcher with control streams, so
// a single ttrpc.Server serves every control stream of every session.
//
// The host's policy package has the same channel-fed listener (its
// connListener hands classified guest connections to its HTTP server). The
// two stay apart on purpose: the agent imports no package of the host, and
// policy imports no other package of the project.
type Listener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

// NewListener returns an open listener.
func NewListener() *Listener {
	return &Listener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

// Push hands c to Accept. It closes c if the listener is closed.
func (l *Listener) Push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		c.Close()
	}
}

// Accept implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr implements net.Listener.
func (l *Listener) Addr() net.Addr { return addr{} }

type addr struct{}

func (addr) Network() string { return "gondolin" }
func (addr) String() string  { return "gondolin-channel" }
