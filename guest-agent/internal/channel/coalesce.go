package channel

import (
	"encoding/binary"
	"io"
)

// yamuxHeaderSize is the size of a yamux frame header: version, type,
// flags, stream ID and length.
const yamuxHeaderSize = 12

// MaxFrameBody is the largest frame body that goes out, header included,
// in one virtio-serial write: what writers of a stream should hand yamux
// at a time.
const MaxFrameBody = MaxWrite - yamuxHeaderSize

// yamuxTypeData is the frame type whose length counts the body that
// follows the header (window updates, pings and go-aways carry none).
const yamuxTypeData = 0

// coalescingConn joins each yamux data-frame header with the body yamux
// writes right after it. yamux writes the two separately, and on a
// virtio-serial port every write is a buffer handed to the device with a
// notification, which under emulation costs about as much as the data it
// carries. yamux writes frames from one goroutine, one after the other, so
// a held header is always followed by its body.
type coalescingConn struct {
	io.ReadWriteCloser
	buf  []byte
	held bool
}

func newCoalescingConn(c io.ReadWriteCloser) *coalescingConn {
	return &coalescingConn{ReadWriteCloser: c, buf: make([]byte, 0, yamuxHeaderSize+MaxWrite)}
}

// MaxWrite is what a virtio-serial port takes in one write: a frame body
// up to MaxWrite-yamuxHeaderSize bytes goes out, header included, as one
// buffer with one notification of the host. Gondolin's guest kernel takes
// 256 KiB (images/kernel/patches/0003-virtio_console-large-writes.patch);
// a stock kernel takes 32 KiB and returns a short write, which the writer
// completes with more writes.
const MaxWrite = 256 * 1024

func (c *coalescingConn) Write(p []byte) (int, error) {
	if c.held {
		c.held = false
		c.buf = append(c.buf[:yamuxHeaderSize], p...)
		n, err := c.ReadWriteCloser.Write(c.buf)
		n -= yamuxHeaderSize
		if n < 0 {
			n = 0
		}
		return n, err
	}
	if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:12]) > 0 {
		c.buf = append(c.buf[:0], p...)
		c.held = true
		return len(p), nil
	}
	return c.ReadWriteCloser.Write(p)
}
