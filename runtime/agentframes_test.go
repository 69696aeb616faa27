package runtime

import (
	"context"
	"encoding/binary"
	"net"
	goruntime "runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// guestConn is the channel as a hostile guest drives it: Read hands out
// fixed bytes, then blocks until Close; Write discards, or blocks until
// Close when stalled (a guest that stops reading).
type guestConn struct {
	mu      sync.Mutex
	data    []byte
	drained chan struct{} // closed once data has been read
	closed  chan struct{}
	once    sync.Once
	// stalled makes writes block; go holds reads back until closed.
	stalled atomic.Bool
	start   chan struct{}
}

func newGuestConn(data []byte) *guestConn {
	g := &guestConn{data: data, drained: make(chan struct{}), closed: make(chan struct{}), start: make(chan struct{})}
	close(g.start)
	return g
}

func (g *guestConn) Read(p []byte) (int, error) {
	select {
	case <-g.start:
	case <-g.closed:
		return 0, net.ErrClosed
	}
	g.mu.Lock()
	if len(g.data) > 0 {
		n := copy(p, g.data)
		g.data = g.data[n:]
		g.mu.Unlock()
		return n, nil
	}
	g.mu.Unlock()
	g.once.Do(func() { close(g.drained) })
	<-g.closed
	return 0, net.ErrClosed
}

func (g *guestConn) Write(p []byte) (int, error) {
	if g.stalled.Load() {
		<-g.closed
		return 0, net.ErrClosed
	}
	select {
	case <-g.closed:
		return 0, net.ErrClosed
	default:
		return len(p), nil
	}
}

func (g *guestConn) Close() error {
	select {
	case <-g.closed:
	default:
		close(g.closed)
	}
	return nil
}

func (g *guestConn) LocalAddr() net.Addr              { return &net.UnixAddr{} }
func (g *guestConn) RemoteAddr() net.Addr             { return &net.UnixAddr{} }
func (g *guestConn) SetDeadline(time.Time) error      { return nil }
func (g *guestConn) SetReadDeadline(time.Time) error  { return nil }
func (g *guestConn) SetWriteDeadline(time.Time) error { return nil }
func (g *guestConn) waitDrained(t testing.TB) {
	t.Helper()
	select {
	case <-g.drained:
	case <-time.After(10 * time.Second):
		t.Fatal("the host did not read what the guest sent")
	}
}

// yamuxFrame is one frame as the guest's yamux would send it.
func yamuxFrame(typ byte, flags uint16, id, length uint32, body []byte) []byte {
	b := make([]byte, yamuxHeaderSize, yamuxHeaderSize+len(body))
	b[1] = typ
	binary.BigEndian.PutUint16(b[2:], flags)
	binary.BigEndian.PutUint32(b[4:], id)
	binary.BigEndian.PutUint32(b[8:], length)
	return append(b, body...)
}

// ttrpcResponse is the guest's answer to the host's first call (ttrpc
// stream 1) on the control stream (yamux stream 1), in one data frame.
func ttrpcResponse(t testing.TB, msg proto.Message) []byte {
	payload, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return ttrpcAnswer(t, &ttrpc.Response{Payload: payload})
}

// ttrpcAnswer frames a ttrpc response to the host's first call (ttrpc
// stream 1) on the control stream (yamux stream 1), in one data frame.
func ttrpcAnswer(t testing.TB, r *ttrpc.Response) []byte {
	resp, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 10)
	binary.BigEndian.PutUint32(hdr, uint32(len(resp)))
	binary.BigEndian.PutUint32(hdr[4:], 1)
	hdr[8] = 2 // response
	body := append(hdr, resp...)
	const ack = 2
	return append(yamuxFrame(yamuxTypeWindow, ack, 1, 0, nil), yamuxFrame(yamuxTypeData, 0, 1, uint32(len(body)), body)...)
}

// settle waits for the goroutine count to come down to at most want.
func settle(want int) int {
	n := goruntime.NumGoroutine()
	for i := 0; i < 1000 && n > want; i++ {
		time.Sleep(time.Millisecond)
		n = goruntime.NumGoroutine()
	}
	return n
}

// A guest that floods pings and stops reading must not grow the shim by a
// goroutine per ping (yamux answers each from a goroutine of its own).
func TestAgentChannelDropsGuestPings(t *testing.T) {
	var flood []byte
	for i := 0; i < 20000; i++ {
		flood = append(flood, yamuxFrame(yamuxTypePing, yamuxFlagSYN, 0, uint32(i), nil)...)
	}
	before := goruntime.NumGoroutine()
	g := newGuestConn(flood)
	g.start = make(chan struct{}) // the pings come once the guest stopped reading
	a, err := newAgentConn(context.Background(), g)
	if err != nil {
		t.Fatal(err)
	}
	g.stalled.Store(true)
	close(g.start)
	g.waitDrained(t)
	if n := settle(before + 20); n > before+20 {
		t.Fatalf("%d goroutines after 20000 pings (were %d)", n, before)
	}
	g.Close()
	a.Close()
}

// Streams the guest opens are never accepted nor buffered.
func TestAgentChannelDropsGuestStreams(t *testing.T) {
	var flood []byte
	body := make([]byte, 64<<10)
	for id := uint32(2); id < 2+2*300; id += 2 {
		flood = append(flood, yamuxFrame(yamuxTypeData, yamuxFlagSYN, id, uint32(len(body)), body)...)
		flood = append(flood, yamuxFrame(yamuxTypeData, 0, id, uint32(len(body)), body)...)
	}
	flood = append(flood, ttrpcResponse(t, &api.Listeners{Generation: 7, TcpPorts: []uint32{8080}})...)
	g := newGuestConn(flood)
	a, err := newAgentConn(context.Background(), g)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := a.WaitListeners(ctx, &api.WaitListenersRequest{})
	if err != nil || resp.Generation != 7 {
		t.Fatalf("the channel no longer works after the guest opened streams: %v, %v", resp, err)
	}
	if n := a.session.NumStreams(); n != 1 {
		t.Fatalf("%d streams in the session, want the control stream only", n)
	}
}

// FuzzAgentChannel runs the host's end of the channel on arbitrary bytes
// from the guest (yamux frames, the ttrpc answers on the control stream)
// and makes one call: no panic, and nothing of the session outlives it.
func FuzzAgentChannel(f *testing.F) {
	f.Add(ttrpcResponse(f, &api.Listeners{Generation: 1, TcpPorts: []uint32{80, 65616}, UdpPorts: []uint32{53}}))
	f.Add(yamuxFrame(yamuxTypePing, yamuxFlagSYN, 0, 1, nil))
	f.Add(yamuxFrame(yamuxTypeData, yamuxFlagSYN, 2, 4, []byte("abcd")))
	f.Add(yamuxFrame(yamuxTypeData, 0, 1, 1<<30, nil))
	f.Add(yamuxFrame(3, 0, 0, 1, nil))
	f.Add(yamuxFrame(9, 0, 0, 0, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		before := goruntime.NumGoroutine()
		g := newGuestConn(data)
		a, err := newAgentConn(context.Background(), g)
		if err != nil {
			return
		}
		// The call ends with the guest's answer, or once yamux has read
		// all the guest sent (a moment later, for the last frame to be
		// handled), or after 20 ms.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		go func() {
			select {
			case <-g.drained:
				time.Sleep(time.Millisecond)
				cancel()
			case <-ctx.Done():
			}
		}()
		_, _ = a.WaitListeners(ctx, &api.WaitListenersRequest{})
		cancel()
		a.Close()
		g.Close()
		if n := settle(before + 2); n > before+2 {
			t.Fatalf("%d goroutines after the session (were %d)", n, before)
		}
	})
}

// A guest that half-closes the control stream and sends part of a frame
// must not wedge the host's calls: each still ends with its context.
func TestAgentChannelPartialFrameDoesNotWedgeCalls(t *testing.T) {
	const fin = 4
	g := newGuestConn(yamuxFrame(yamuxTypeData, fin, 1, 100, []byte("only part of the payload")))
	a, err := newAgentConn(context.Background(), g)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	defer a.Close()
	g.waitDrained(t)
	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		done := make(chan error, 1)
		go func() {
			_, err := a.WaitListeners(ctx, &api.WaitListenersRequest{})
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("a call succeeded with no answer from the guest")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a call hung past its context's deadline")
		}
		cancel()
	}
}
