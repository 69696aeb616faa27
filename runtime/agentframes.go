package runtime

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// agentYamuxConfig is the host's yamux configuration for the channel.
func agentYamuxConfig() *yamux.Config {
	cfg := yamux.DefaultConfig()
	// A paused or slow (emulated) guest stops reading for a while: neither
	// keep-alives nor write timeouts may tear the session down for that.
	// A dead VM is noticed through the VMM process exiting instead.
	cfg.EnableKeepAlive = false
	cfg.ConnectionWriteTimeout = 24 * time.Hour
	cfg.StreamOpenTimeout = 0
	cfg.MaxStreamWindowSize = agentMaxWindow
	// AcceptBacklog stays at its default: yamux also bounds the host's own
	// unacknowledged opens by it. Streams the guest opens never reach the
	// backlog (guestFrames drops them).
	cfg.LogOutput = io.Discard
	cfg.Logger = nil
	return cfg
}

// agentMaxWindow is the most a stream of the channel may have in flight
// towards the host, and so the largest data frame the guest may send.
const agentMaxWindow = 1 << 20

// yamux's frame header (github.com/hashicorp/yamux, spec.md): version,
// type, flags, stream ID, length; a data frame's length bytes follow.
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	yamuxTypeWindow = 1
	yamuxTypePing   = 2
	yamuxFlagSYN    = 1
)

// guestFrames is the host's reading end of the channel: it hands yamux the
// guest's frames except those the host never wants, which a hostile guest
// could use to make the shim spend without bound:
//
//   - ping requests: yamux answers each from a goroutine of its own that
//     waits (up to the 24 h write timeout) for the channel to take the
//     answer, so a guest that sends pings and stops reading would grow the
//     shim by a goroutine per 12 bytes. Neither end sends pings
//     (keep-alives are off on both), so they are dropped.
//   - streams the guest opens (SYN): the host opens every stream itself
//     (control and stdio); a guest-opened stream would sit in yamux's
//     accept backlog with up to a window of buffered data. The frame is
//     dropped, so yamux never learns of the stream and discards the data
//     of any later frame on it.
//
// And a data frame reaches yamux only once all of it has arrived. yamux
// reads a frame's payload from the connection holding the stream's receive
// lock; a guest that sends part of a payload and stops would leave the
// lock held, and with the stream half-closed (FIN) Read holds the state
// lock while waiting for it, so every write on the stream, and any ttrpc
// call, hangs, deaf to its context. A data frame longer than
// agentMaxWindow (which yamux would refuse as past the window anyway) ends
// the session.
//
// Everything else reaches yamux as the guest sent it, and yamux bounds it
// (windows, versions, types). onDrop is called once, at the first
// dropped frame, so the shim log gets one line however many follow.
type guestFrames struct {
	net.Conn
	r       *bufio.Reader
	hdr     [yamuxHeaderSize]byte
	pending []byte // the current frame's header, being handed on
	pass    int64  // the current data frame's payload left to hand on
	once    sync.Once
	onDrop  func(what string)
}

func newGuestFrames(conn net.Conn, onDrop func(what string)) *guestFrames {
	if onDrop == nil {
		onDrop = func(string) {}
	}
	// The buffer holds the largest frame: Go takes its pages from the
	// kernel zeroed, so only what frames fill becomes resident.
	return &guestFrames{Conn: conn, r: bufio.NewReaderSize(conn, yamuxHeaderSize+agentMaxWindow), onDrop: onDrop}
}

// Read is only called by yamux's receive loop, one call at a time.
func (g *guestFrames) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if len(g.pending) > 0 {
			n := copy(p, g.pending)
			g.pending = g.pending[n:]
			return n, nil
		}
		if g.pass > 0 {
			if int64(len(p)) > g.pass {
				p = p[:g.pass]
			}
			n, err := g.r.Read(p)
			g.pass -= int64(n)
			return n, err
		}
		if _, err := io.ReadFull(g.r, g.hdr[:]); err != nil {
			return 0, err
		}
		typ, flags := g.hdr[1], binary.BigEndian.Uint16(g.hdr[2:4])
		length := binary.BigEndian.Uint32(g.hdr[8:12])
		var drop string
		switch {
		case typ == yamuxTypePing && flags&yamuxFlagSYN != 0:
			drop = "ping"
		case (typ == yamuxTypeData || typ == yamuxTypeWindow) && flags&yamuxFlagSYN != 0:
			drop = "stream the guest opened"
		}
		if drop == "" {
			if typ == yamuxTypeData {
				if length > agentMaxWindow {
					return 0, fmt.Errorf("agent channel: a data frame of %d bytes from the guest, past the %d byte window", length, agentMaxWindow)
				}
				// Wait for the whole payload (see above).
				if _, err := g.r.Peek(int(length)); err != nil {
					return 0, err
				}
				g.pass = int64(length)
			}
			g.pending = g.hdr[:]
			continue
		}
		g.once.Do(func() { g.onDrop(drop) })
		if typ == yamuxTypeData && length > 0 {
			if _, err := io.CopyN(io.Discard, g.r, int64(length)); err != nil {
				return 0, err
			}
		}
	}
}
