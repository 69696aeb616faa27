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

func writeFrames(ctx context.Context, conn net.Conn, ch *channel.Endpoint) error {
	w := bufio.NewWriterSize(conn, 256<<10)
	var lenbuf [4]byte
	for {
		pkt := ch.ReadContext(ctx)
		if pkt == nil {
			return ctx.Err()
		}
		for pkt != nil {
			v := pkt.ToView()
			binary.BigEndian.PutUint32(lenbuf[:], uint32(v.Size()))
			_, err := w.Write(lenbuf[:])
			if err == nil {
				_, err = v.WriteTo(w)
			}
			v.Release()
			pkt.DecRef()
			if err != nil {
				return err
			}
			// Batch what is already queued into one write.
			pkt = ch.Read()
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}
