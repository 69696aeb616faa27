package channel

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agentlog"
)

// HeaderTimeout bounds how long a new stream may take to send its header.
const HeaderTimeout = 10 * time.Second

// Transport yields one connection per host session. Next blocks until the
// host is there; the connection ends when the host goes away.
type Transport interface {
	Next(ctx context.Context) (io.ReadWriteCloser, error)
}

// Server dispatches the streams of host sessions.
type Server struct {
	Control       *Listener
	Streams       *Registry
	HeaderTimeout time.Duration
}

// NewServer returns a dispatcher feeding control streams to l and stdio
// streams to reg.
func NewServer(l *Listener, reg *Registry) *Server {
	return &Server{Control: l, Streams: reg, HeaderTimeout: HeaderTimeout}
}

// MaxStreamWindow is how much of a stream's data the agent buffers before
// the host must wait for it to read.
const MaxStreamWindow = 1 << 20

// YamuxConfig is the agent's yamux configuration. Keepalive is off: the
// transport reports the host leaving (EOF), and a slow host under TCG must
// not lose its session to a missed ping.
func YamuxConfig() *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.ConnectionWriteTimeout = 30 * time.Second
	// The host may run this far ahead on a stream (stdin) before it waits
	// for the agent to take the data: the default 256 KiB made the host
	// wait for a window update, a round trip through the emulated port,
	// every 128 KiB. The memory is the guest's own: at most this much per
	// stream the host sends on (the control stream and each stdin). The
	// host's own receive window, what the guest can make the shim hold, is
	// set on the host (runtime/agentframes.go) and is not changed by this.
	cfg.MaxStreamWindowSize = MaxStreamWindow
	cfg.LogOutput = logWriter{}
	return cfg
}

type logWriter struct{}

func (logWriter) Write(p []byte) (int, error) {
	agentlog.Infof("%s", strings.TrimSpace(string(p)))
	return len(p), nil
}

// Run serves sessions one after another until ctx ends or the transport
// fails: when the host disconnects (e.g. the shim restarted) the session is
// closed and the agent waits for the next one. Processes keep running.
func (s *Server) Run(ctx context.Context, t Transport) error {
	for {
		conn, err := t.Next(ctx)
		if err != nil {
			return err
		}
		agentlog.Infof("host connected")
		err = s.ServeSession(ctx, conn)
		agentlog.Infof("host disconnected (%v)", err)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// ServeSession runs a yamux server session on conn until it ends.
func (s *Server) ServeSession(ctx context.Context, conn io.ReadWriteCloser) error {
	sess, err := yamux.Server(newCoalescingConn(conn), YamuxConfig())
	if err != nil {
		conn.Close()
		return err
	}
	defer s.Streams.DropOwner(sess)
	defer sess.Close()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return err
		}
		go s.dispatch(st, sess)
	}
}

func (s *Server) dispatch(st net.Conn, sess *yamux.Session) {
	timeout := s.HeaderTimeout
	if timeout <= 0 {
		timeout = HeaderTimeout
	}
	_ = st.SetReadDeadline(time.Now().Add(timeout))
	h, err := api.ReadStreamHeader(st)
	_ = st.SetReadDeadline(time.Time{})
	if err != nil {
		agentlog.Errorf("new stream: %v", err)
		st.Close()
		return
	}
	switch h.Kind {
	case api.StreamHeader_CONTROL:
		s.Control.Push(st)
	case api.StreamHeader_STDIN, api.StreamHeader_STDOUT, api.StreamHeader_STDERR:
		if h.ContainerId == "" {
			agentlog.Errorf("%s stream without a container id: closing it", h.Kind)
			st.Close()
			return
		}
		k := Key{ContainerID: h.ContainerId, ExecID: h.ExecId, Kind: h.Kind}
		agentlog.Debugf("%s opened", k)
		s.Streams.Put(k, st, sess)
		if sess.IsClosed() { // raced with the end of the session
			s.Streams.DropOwner(sess)
		}
	default:
		agentlog.Errorf("stream of unknown kind %d: closing it", h.Kind)
		st.Close()
	}
}

// ErrNoPort says the channel port is missing.
type ErrNoPort struct{ Name string }

func (e ErrNoPort) Error() string {
	return fmt.Sprintf("no virtio-serial port named %q in /sys/class/virtio-ports (is the virtserialport device on the QEMU command line?)", e.Name)
}
