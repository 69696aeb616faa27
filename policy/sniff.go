package policy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

const (
	// sniffTimeout bounds the wait for a client's first bytes.
	sniffTimeout = 30 * time.Second
	// openSniffTimeout is the wait in mode open on ports other than 80 and
	// 443, after which a silent client (a server-speaks-first protocol)
	// is passed through raw.
	openSniffTimeout = 2 * time.Second
	maxTLSRecord     = 16384 + 2048
)

type protoKind int

const (
	protoUnknown protoKind = iota
	protoTLS
	protoHTTP
)

// peekProtocol looks at a client's first bytes without consuming them. For
// TLS it waits for the whole first record (the ClientHello).
func peekProtocol(r *bufio.Reader) (protoKind, error) {
	b, err := r.Peek(1)
	if err != nil {
		return protoUnknown, err
	}
	if b[0] == 0x16 {
		h, err := r.Peek(5)
		if err != nil {
			return protoUnknown, err
		}
		if h[1] != 3 || h[2] > 4 {
			return protoUnknown, nil
		}
		l := int(h[3])<<8 | int(h[4])
		if l == 0 || l > maxTLSRecord {
			return protoUnknown, nil
		}
		if _, err := r.Peek(5 + l); err != nil {
			return protoUnknown, err
		}
		return protoTLS, nil
	}
	for want := r.Buffered(); ; want = r.Buffered() + 1 {
		b, err := r.Peek(want)
		if err != nil {
			return protoUnknown, err
		}
		switch classifyHTTP(b) {
		case httpYes:
			return protoHTTP, nil
		case httpNo:
			return protoUnknown, nil
		}
	}
}

type httpGuess int

const (
	httpMore httpGuess = iota
	httpYes
	httpNo
)

const maxMethodLen = 20

// classifyHTTP tells whether b starts like an HTTP/1.x request line (or the
// HTTP/2 prior-knowledge preface): an upper-case method token and a space.
func classifyHTTP(b []byte) httpGuess {
	for i, c := range b {
		switch {
		case c == ' ':
			if i >= 3 {
				return httpYes
			}
			return httpNo
		case c >= 'A' && c <= 'Z', c == '-' && i > 0:
		default:
			return httpNo
		}
		if i >= maxMethodLen {
			return httpNo
		}
	}
	if len(b) > maxMethodLen {
		return httpNo
	}
	return httpMore
}

// peekSNI reads the server name from the buffered ClientHello.
func peekSNI(r *bufio.Reader) string {
	b, err := r.Peek(r.Buffered())
	if err != nil {
		return ""
	}
	return parseSNI(b)
}

var errSNIDone = errors.New("sni read")

// parseSNI lets crypto/tls parse a ClientHello and reports its SNI.
func parseSNI(hello []byte) string {
	var sni string
	c := tls.Server(&replayConn{r: bytes.NewReader(hello)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni = h.ServerName
			return nil, errSNIDone
		},
	})
	c.Handshake()
	return sni
}

// replayConn is a read-only net.Conn over a byte slice.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *replayConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
