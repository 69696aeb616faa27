package policy

import (
	"io"
	"net"
	"strconv"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

func TestWholeSegments(t *testing.T) {
	for _, c := range []struct{ mtu, target, want int }{
		{65000, 256 << 10, 4 * 64920},
		{1500, 256 << 10, 184 * 1420},
		{65000, 32 << 10, 64920}, // one segment, even past the target
		{60, 100, 100},           // no room past the headers: 1-byte segments
	} {
		if got := wholeSegments(c.mtu, c.target); got != c.want {
			t.Errorf("wholeSegments(%d, %d) = %d, want %d", c.mtu, c.target, got, c.want)
		}
	}
}

func TestCopyBuffersBounded(t *testing.T) {
	c := newCopyBuffers(65000)
	var bigs [][]byte
	for i := 0; i < maxBigCopyBuffers; i++ {
		b := c.Get()
		if len(b) != wholeSegments(65000, bigCopyTarget) {
			t.Fatalf("buffer %d: %d bytes, want a big one", i, len(b))
		}
		bigs = append(bigs, b)
	}
	small := c.Get()
	if len(small) != smallCopyBuffer {
		t.Fatalf("past %d big buffers: %d bytes, want %d", maxBigCopyBuffers, len(small), smallCopyBuffer)
	}
	if got := c.bigOut(); got != maxBigCopyBuffers {
		t.Errorf("%d big buffers out, want %d", got, maxBigCopyBuffers)
	}
	c.Put(small) // not counted
	if got := c.bigOut(); got != maxBigCopyBuffers {
		t.Errorf("after giving back a small one: %d big buffers out, want %d", got, maxBigCopyBuffers)
	}
	c.Put(bigs[0])
	if b := c.Get(); len(b) != len(bigs[0]) {
		t.Errorf("after giving back a big one: got %d bytes, want a big one", len(b))
	}
	for _, b := range bigs[1:] {
		c.Put(b)
	}
	if got := c.bigOut(); got != 1 {
		t.Errorf("%d big buffers out, want the 1 not given back", got)
	}
}

// rxFrames is the guest NIC's count of received frames and bytes.
func rxFrames(t *testing.T, s *stack.Stack) (frames, bytes uint64) {
	info, ok := s.SingleNICInfo(1)
	if !ok {
		t.Fatal("the test guest has no NIC 1")
	}
	return info.Stats.Rx.Packets.Value(), info.Stats.Rx.Bytes.Value()
}

// TestDownloadsInFullSegments: upstream data reaches the guest in
// full-size frames, through the HTTP proxy and the raw relay alike (32 KiB
// writes used to make 32 KiB frames on the 65000-byte MTU link).
func TestDownloadsInFullSegments(t *testing.T) {
	const size = 16 << 20
	for _, relay := range []bool{false, true} {
		name := "http proxy"
		if relay {
			name = "raw relay"
		}
		t.Run(name, func(t *testing.T) {
			cfg := Config{Allow: allow(t, "api.example.com")}
			if relay {
				cfg = Config{TCPAllow: allow(t, "db.example.com:5433")}
			}
			e := newEnv(t, cfg)
			// db.example.com:5433 sends size bytes and closes.
			src := listenLoopback(t, func(c net.Conn) { c.Write(make([]byte, size)) })
			e.dialer.mu.Lock()
			e.dialer.routes["tcp "+dbIP.String()+":5433"] = src.Addr().String()
			e.dialer.mu.Unlock()

			f0, b0 := rxFrames(t, e.g.s)
			var body io.ReadCloser
			if relay {
				conn, err := e.g.dialHost(e.g.ctx, "db.example.com:5433")
				if err != nil {
					t.Fatal(err)
				}
				body = conn
			} else {
				resp, err := e.g.client(nil, false).Get("http://api.example.com/bytes?n=" + strconv.Itoa(size))
				if err != nil {
					t.Fatal(err)
				}
				body = resp.Body
			}
			n, err := io.Copy(io.Discard, body)
			body.Close()
			if err != nil || n != size {
				t.Fatalf("read %d of %d bytes: %v", n, size, err)
			}
			f1, b1 := rxFrames(t, e.g.s)
			frames, bytes := f1-f0, b1-b0
			full := wholeSegments(e.n.cfg.MTU, 1)
			// All in full frames would be size/full frames; allow for
			// the handshake, the response header and the small ones at
			// the edges of writes.
			if maxFrames := uint64(size/full) * 5 / 4; frames > maxFrames {
				t.Errorf("%d bytes came in %d frames (%d bytes each on average), want at most %d (full segments carry %d)",
					bytes, frames, bytes/max(frames, 1), maxFrames, full)
			}
		})
	}
}
