package policy

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http/httputil"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// flow is one guest TCP connection.
type flow struct {
	n   *Network
	ep  tcpip.Endpoint
	src netip.AddrPort
	dst netip.AddrPort
	// name is the host a synthetic destination address stands for.
	name      string
	synthetic bool
	tls       bool
	sni       string

	mu    sync.Mutex
	proxy *httputil.ReverseProxy
	// upstream holds one transport per checked destination (upstream.go).
	upstream upstreamSet
}

// desc is the flow as the decisions see it.
func (f *flow) desc() Flow {
	return Flow{Dst: f.dst, Synthetic: f.synthetic, Name: f.name, TLS: f.tls, SNI: f.sni}
}

func (f *flow) record(proto string) AuditRecord {
	host := f.name
	if host == "" {
		host = f.dst.Addr().String()
	}
	return AuditRecord{Protocol: proto, Host: host, Port: f.dst.Port(), Dest: f.dst.String()}
}

// accept completes the guest's handshake. The flow holds its slot of
// Limits.TCPFlows (release) until its guest side is closed.
func (n *Network) accept(r *tcp.ForwarderRequest, f *flow, release func()) (*gonet.TCPConn, bool) {
	var wq waiter.Queue
	raw, err := r.CreateEndpoint(&wq)
	if err != nil {
		release()
		r.Complete(true)
		return nil, false
	}
	ep := &countedEndpoint{Endpoint: raw, release: release}
	r.Complete(false)
	ep.SocketOptions().SetKeepAlive(true)
	f.ep = ep
	return gonet.NewTCPConn(&wq, ep), true
}

// flowConn is the guest side of a flow, with the bytes peeked at by the
// classifier still to be read.
type flowConn struct {
	*gonet.TCPConn
	r *bufio.Reader
	f *flow
}

func (c *flowConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func flowOf(c net.Conn) *flow {
	switch c := c.(type) {
	case *flowConn:
		return c.f
	case *tls.Conn:
		if fc, ok := c.NetConn().(*flowConn); ok {
			return fc.f
		}
	}
	return nil
}

type flowKey struct{}
