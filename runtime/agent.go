package runtime

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/hashicorp/yamux"
	"google.golang.org/grpc/status"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// agentConn is the host end of the channel to the guest agent: one yamux
// session over the VM's channel socket, a control stream carrying ttrpc and
// one stream per stdio pipe.
type agentConn struct {
	session *yamux.Session
	client  *ttrpc.Client
	api.AgentService
}

// dialAgent connects to the VMM's channel socket. The VMM creates it before
// the guest runs, so this only retries while the socket is being set up or
// until vmDone closes.
func dialAgent(ctx context.Context, socket string, vmDone <-chan struct{}) (*agentConn, error) {
	var conn net.Conn
	var err error
	for i := 0; ; i++ {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "unix", socket)
		if err == nil {
			break
		}
		if i > 200 {
			return nil, fmt.Errorf("connect to agent channel %s: %w", socket, err)
		}
		select {
		case <-vmDone:
			return nil, fmt.Errorf("VM exited before the agent channel %s was connected", socket)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return newAgentConn(ctx, conn)
}

// newAgentConn runs the host's end of the channel on conn. What the guest
// sends is read through guestFrames (agentframes.go).
func newAgentConn(ctx context.Context, conn net.Conn) (*agentConn, error) {
	frames := newGuestFrames(conn, func(what string) {
		log.G(ctx).Warnf("agent channel: dropped a %s from the guest: the host never accepts one (further ones are dropped silently)", what)
	})
	session, err := yamux.Client(frames, agentYamuxConfig())
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start channel session: %w", err)
	}
	ctl, err := openStream(session, &api.StreamHeader{Kind: api.StreamHeader_CONTROL})
	if err != nil {
		session.Close()
		return nil, err
	}
	client := ttrpc.NewClient(ctl, ttrpc.WithOnClose(func() {
		log.G(ctx).Debug("agent control stream closed")
	}), ttrpc.WithUnaryClientInterceptor(boundGuestStatus))
	return &agentConn{session: session, client: client, AgentService: api.NewAgentClient(client)}, nil
}

func openStream(session *yamux.Session, h *api.StreamHeader) (net.Conn, error) {
	s, err := session.Open()
	if err != nil {
		return nil, fmt.Errorf("open %s stream: %w", h.Kind, err)
	}
	if err := api.WriteStreamHeader(s, h); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// openStdio opens the stream for one stdio pipe of a process.
func (a *agentConn) openStdio(kind api.StreamHeader_Kind, containerID, execID string) (net.Conn, error) {
	return openStream(a.session, &api.StreamHeader{Kind: kind, ContainerId: containerID, ExecId: execID})
}

func (a *agentConn) Close() error {
	if a.session == nil {
		// Only an AgentService, with no channel under it (a test's).
		return nil
	}
	a.client.Close()
	return a.session.Close()
}

// maxGuestMessage bounds the text of an error the guest answers with.
const maxGuestMessage = 4 << 10

// boundGuestStatus makes the error text of every agent answer safe to pass
// on: it ends in the shim log and, through containerd, in a client's
// terminal (docker prints "OCI runtime exec failed: ..." as it is), and
// the guest writes it. It is cut to maxGuestMessage bytes (ttrpc allows
// 4 MiB) and its control characters, invalid UTF-8 and other
// non-printable runes (terminal escapes, bidirectional overrides,
// newlines that would start a line of their own) are escaped. Status
// details, which the agent never sends, are dropped unread.
func boundGuestStatus(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response, _ *ttrpc.UnaryClientInfo, invoke ttrpc.Invoker) error {
	err := invoke(ctx, req, resp)
	if st := resp.Status; st != nil {
		st.Message = guestText(st.Message, maxGuestMessage)
		st.Details = nil
	}
	return err
}

// guestText is s, written by the guest, as printable text of at most max
// bytes (plus a note of what was cut).
func guestText(s string, max int) string {
	var b strings.Builder
	for i, r := range s {
		if b.Len() >= max {
			fmt.Fprintf(&b, "... [%d more bytes from the guest cut]", len(s)-i)
			break
		}
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], string(utf8.RuneError)):
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

// processStartError reports a process the guest could not start (a
// missing binary, a bad working directory) in runc's shim's words, "OCI
// runtime create failed: ..." or "OCI runtime exec failed: exec failed:
// ...": Docker shows that message as it is, so users see what they would
// with runc. Other errors keep their kind, with context.
func processStartError(op, what string, err error) error {
	msg := err.Error()
	if st, ok := status.FromError(err); ok {
		msg = st.Message()
	}
	if strings.HasPrefix(msg, api.ProcessStartFailed) {
		if op == "exec" {
			return fmt.Errorf("OCI runtime exec failed: exec failed: %s", msg)
		}
		return fmt.Errorf("OCI runtime %s failed: %s", op, msg)
	}
	return fmt.Errorf("%s: %w", what, agentError(err))
}

// agentError turns the agent's status errors into containerd's error kinds
// (not found, failed precondition, ...), keeping the agent's message.
func agentError(err error) error {
	if err == nil {
		return nil
	}
	return errgrpc.ToNative(err)
}
