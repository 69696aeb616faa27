package policy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// The NIC's frames travel as QEMU's -netdev stream (and -netdev socket)
// carry them: each Ethernet frame preceded by its length as a 4-byte
// big-endian integer.

const linkQueueLen = 1024

// newFrameLink returns the channel endpoint the pump drives and the
// Ethernet endpoint to give the stack. mtu is the IP MTU.
func newFrameLink(mtu int, mac net.HardwareAddr) (*channel.Endpoint, stack.LinkEndpoint) {
	ch := channel.New(linkQueueLen, uint32(mtu+header.EthernetMinimumSize), tcpip.LinkAddress(mac))
	return ch, ethernet.New(ch)
}

// maxFrame bounds a frame read from the stream: the MTU plus an Ethernet
// header with a VLAN tag. Longer frames are read and dropped.
func maxFrame(mtu int) int { return mtu + header.EthernetMinimumSize + 4 }

// pumpFrames moves frames between conn and ch until conn fails or ctx ends.
// It closes conn when done and returns the first error.
func pumpFrames(ctx context.Context, conn net.Conn, ch *channel.Endpoint, mtu int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- readFrames(conn, ch, mtu) }()
	go func() { errc <- writeFrames(ctx, conn, ch) }()
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	err := <-errc
	cancel()
	conn.Close()
	<-errc
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func readFrames(conn net.Conn, ch *channel.Endpoint, mtu int) error {
	r := bufio.NewReaderSize(conn, 256<<10)
	limit := maxFrame(mtu)
	var lenbuf [4]byte
	for {
		if _, err := io.ReadFull(r, lenbuf[:]); err != nil {
			return err
		}
		n := int(binary.BigEndian.Uint32(lenbuf[:]))
		if n > limit || n < header.EthernetMinimumSize {
			if n > 1<<20 {
				return fmt.Errorf("frame stream out of sync: length %d", n)
			}
			if _, err := r.Discard(n); err != nil {
				return err
			}
			continue
		}
		frame := make([]byte, n)
		if _, err := io.ReadFull(r, frame); err != nil {
			return err
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
		// The Ethernet endpoint reads the frame's type itself.
		ch.InjectInbound(0, pkt)
		pkt.DecRef()
	}
}

// A batch of frames written at once (one writev) is at most maxBatchFrames
// frames and stops growing past maxBatchBytes.
const (
	maxBatchFrames = 64
	maxBatchBytes  = 1 << 20
)

// writeFrames writes the stack's outbound frames to conn, each after its
// length, batching what is already queued into one writev straight from
// the packets' own buffers (no copy into a staging buffer).
func writeFrames(ctx context.Context, conn net.Conn, ch *channel.Endpoint) error {
	var (
		pkts []*stack.PacketBuffer
		// lens holds the batch's length prefixes; bufs points into it
		// and into the packets, which are held until written.
		lens    [maxBatchFrames][4]byte
		backing net.Buffers
	)
	for {
		pkt := ch.ReadContext(ctx)
		if pkt == nil {
			return ctx.Err()
		}
		bufs := backing[:0]
		size := 0
		for pkt != nil {
			i := len(pkts)
			pkts = append(pkts, pkt)
			binary.BigEndian.PutUint32(lens[i][:], uint32(pkt.Size()))
			bufs = append(bufs, lens[i][:])
			bufs = appendFrame(bufs, pkt)
			size += 4 + pkt.Size()
			if len(pkts) == maxBatchFrames || size >= maxBatchBytes {
				break
			}
			pkt = ch.Read()
		}
		backing = bufs
		// WriteTo consumes its receiver: write a copy of the slice header.
		w := bufs
		_, err := w.WriteTo(conn)
		for i, p := range pkts {
			p.DecRef()
			pkts[i] = nil
		}
		pkts = pkts[:0]
		clear(backing)
		if err != nil {
			return err
		}
	}
}

// appendFrame appends the slices holding pkt's frame (its headers and
// payload, from the link header on) to bufs.
func appendFrame(bufs net.Buffers, pkt *stack.PacketBuffer) net.Buffers {
	vl, off := pkt.AsViewList()
	for v := vl.Front(); v != nil; v = v.Next() {
		b := v.AsSlice()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		bufs = append(bufs, b[off:])
		off = 0
	}
	return bufs
}
