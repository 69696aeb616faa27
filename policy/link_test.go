package policy

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestWriteFramesBatches: queued frames go out whole and in order, each
// after its length, from packets with headers pushed in front of
// multi-chunk payloads, in batches cut by maxBatchFrames and maxBatchBytes.
func TestWriteFramesBatches(t *testing.T) {
	host, peer := socketPair(t)
	ch := channel.New(linkQueueLen, 65014, "")
	rng := rand.New(rand.NewPCG(1, 2))
	var want [][]byte
	var pkts stack.PacketBufferList
	for i := 0; i < 3*maxBatchFrames; i++ {
		size := 60 + rng.IntN(200)
		if i%7 == 0 {
			size = 65000 // several payload chunks; 20 of them pass maxBatchBytes
		}
		frame := make([]byte, 14+size)
		for j := range frame {
			frame[j] = byte(rng.Uint32())
		}
		want = append(want, frame)
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
			ReserveHeaderBytes: 64,
			Payload:            buffer.MakeWithData(append([]byte(nil), frame[14:]...)),
		})
		copy(pkt.LinkHeader().Push(14), frame[:14])
		pkts.PushBack(pkt)
	}
	if n, err := ch.WritePackets(pkts); err != nil || n != len(want) {
		t.Fatalf("queued %d of %d packets: %v", n, len(want), err)
	}
	pkts.DecRef()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- writeFrames(ctx, host, ch) }()
	for i, w := range want {
		var l [4]byte
		if _, err := io.ReadFull(peer, l[:]); err != nil {
			t.Fatalf("frame %d: length: %v", i, err)
		}
		got := make([]byte, binary.BigEndian.Uint32(l[:]))
		if _, err := io.ReadFull(peer, got); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("frame %d: %d bytes differ from the %d queued", i, len(got), len(w))
		}
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("writeFrames ended with %v, want context.Canceled", err)
	}
}
