package policy

import (
	"context"
	"io"
	"net"
	"sync"
)

// relay copies both ways until both directions are done or the network
// closes. Upstream data goes to the guest through the network's copy
// buffers (full-size segments); the guest's data goes upstream with
// io.Copy's 32 KiB buffer (the host's TCP stack segments it).
func (n *Network) relay(guest, up net.Conn) {
	done := make(chan struct{})
	stop := context.AfterFunc(n.ctx, func() {
		guest.Close()
		up.Close()
	})
	defer stop()
	go func() {
		copyHalf(up, guest, nil)
		close(done)
	}()
	copyHalf(guest, up, n.copyBufs)
	<-done
	guest.Close()
	up.Close()
}

type closeWriter interface{ CloseWrite() error }

// copyHalf copies src to dst, with a buffer from bufs when it is not nil,
// then half-closes dst (or closes both on an error).
func copyHalf(dst, src net.Conn, bufs *copyBuffers) {
	var err error
	if bufs != nil {
		buf := bufs.Get()
		// Neither side implements ReaderFrom or WriterTo (the guest's
		// is a gonet conn, the upstream a countedConn), so the copy
		// goes through buf.
		_, err = io.CopyBuffer(dst, src, buf)
		bufs.Put(buf)
	} else {
		_, err = io.Copy(dst, src)
	}
	if cw, ok := dst.(closeWriter); ok && err == nil {
		cw.CloseWrite()
	} else {
		dst.Close()
		src.Close()
	}
}

// Sizes of the buffers that carry upstream data to the guest.
const (
	// smallCopyBuffer is io.Copy's and ReverseProxy's own size: what a
	// copy gets when the network's big buffers are all taken.
	smallCopyBuffer = 32 << 10
	// bigCopyTarget is about the size of a big buffer.
	bigCopyTarget = 256 << 10
	// maxBigCopyBuffers bounds the big buffers one network holds at once:
	// at most maxBigCopyBuffers × about bigCopyTarget (4 MiB) for a
	// guest however many flows it keeps open.
	maxBigCopyBuffers = 16
	// segmentOverhead is what the netstack takes from the IP MTU for a
	// segment's headers: IPv4 and TCP, and room for the longest TCP
	// options it could send (40 bytes, timestamps and SACK blocks), so a
	// full segment carries MTU-80 bytes (64920 at the default MTU).
	segmentOverhead = 20 + 20 + 40
)

// copyBuffers hands out the buffers that carry upstream data to the guest:
// the raw relay's and the HTTP proxy's response bodies (it is the
// ReverseProxy's BufferPool). The netstack cuts one write into segments of
// at most the guest's MSS but never merges two writes into a segment that
// would hold part of each, so the size of each write sets the size of the
// frames: 32 KiB writes became 32 KiB frames on the 65000-byte MTU link,
// twice the packets the guest (under TCG the bottleneck) must take in. A
// big buffer holds a whole number of full-size segments, so a full read
// from the upstream goes to the guest as full frames.
//
// A copy holds its buffer for as long as it runs, so a guest could hold
// one per flow: past maxBigCopyBuffers big ones at once a copy gets a
// small buffer (the size it always had) instead.
type copyBuffers struct {
	big  int
	mu   sync.Mutex
	out  int // big buffers handed out
	pool sync.Pool
}

// newCopyBuffers sizes the big buffers for a link of IP MTU mtu.
func newCopyBuffers(mtu int) *copyBuffers {
	return &copyBuffers{big: wholeSegments(mtu, bigCopyTarget)}
}

// wholeSegments is about target bytes (not more, unless one segment is)
// rounded down to a whole number of full-size segments on a link of IP
// MTU mtu.
func wholeSegments(mtu, target int) int {
	seg := max(1, mtu-segmentOverhead)
	return max(1, target/seg) * seg
}

// Get returns a big buffer if fewer than maxBigCopyBuffers are out, else a
// small one.
func (c *copyBuffers) Get() []byte {
	c.mu.Lock()
	if c.out >= maxBigCopyBuffers {
		c.mu.Unlock()
		return make([]byte, smallCopyBuffer)
	}
	c.out++
	c.mu.Unlock()
	if b, ok := c.pool.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, c.big)
}

// Put takes back a buffer Get returned.
func (c *copyBuffers) Put(b []byte) {
	if cap(b) != c.big {
		return
	}
	b = b[:c.big]
	c.pool.Put(&b)
	c.mu.Lock()
	c.out--
	c.mu.Unlock()
}

// bigOut is the number of big buffers handed out, for tests.
func (c *copyBuffers) bigOut() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out
}
