package channel

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// hostBytes is a session whose host sends fixed bytes and then goes away;
// what the guest writes back is counted and dropped.
type hostBytes struct {
	r       *bytes.Reader
	mu      sync.Mutex
	written int
}

func (h *hostBytes) Read(p []byte) (int, error) { return h.r.Read(p) }
func (h *hostBytes) Write(p []byte) (int, error) {
	h.mu.Lock()
	h.written += len(p)
	h.mu.Unlock()
	return len(p), nil
}
func (h *hostBytes) Close() error { return nil }

// frame is one yamux frame as the host would send it.
func frame(typ byte, flags uint16, id uint32, body []byte) []byte {
	b := []byte{0, typ, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(b[2:], flags)
	binary.BigEndian.PutUint32(b[4:], id)
	binary.BigEndian.PutUint32(b[8:], uint32(len(body)))
	if typ != yamuxTypeData {
		binary.BigEndian.PutUint32(b[8:], 0)
	}
	return append(b, body...)
}

func streamHeader(h *api.StreamHeader) []byte {
	var b bytes.Buffer
	_ = api.WriteStreamHeader(&b, h)
	return b.Bytes()
}

// FuzzServeSession runs the agent's end of the channel on arbitrary bytes
// from the host: yamux frames, stream headers and whatever follows them.
// The agent must neither panic nor keep anything of a session that ended.
func FuzzServeSession(f *testing.F) {
	const syn = 1
	f.Add(frame(yamuxTypeData, syn, 1, streamHeader(&api.StreamHeader{Kind: api.StreamHeader_CONTROL})))
	f.Add(append(frame(yamuxTypeData, syn, 1, streamHeader(&api.StreamHeader{Kind: api.StreamHeader_STDOUT, ContainerId: "c", ExecId: "e"})),
		frame(yamuxTypeData, syn, 3, streamHeader(&api.StreamHeader{Kind: api.StreamHeader_STDIN, ContainerId: "c"}))...))
	f.Add(frame(yamuxTypeData, syn, 1, []byte{0xff, 0xff, 0xff, 0xff}))
	f.Add(frame(yamuxTypeData, syn, 1, []byte{0, 0, 0, 3, 8, 9, 1}))
	f.Add(frame(2, syn, 0, nil))
	f.Add(frame(1, syn, 5, nil))
	f.Add(frame(3, 0, 0, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		before := runtime.NumGoroutine()
		l := NewListener()
		reg := NewRegistry()
		srv := NewServer(l, reg)
		srv.HeaderTimeout = 20 * time.Millisecond
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func(c net.Conn) { _, _ = io.Copy(io.Discard, c); c.Close() }(c)
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- srv.ServeSession(ctx, &hostBytes{r: bytes.NewReader(data)}) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("a session on a finite input did not end")
		}
		// Streams still being dispatched finish within their header
		// timeout; then nothing of the session may remain.
		deadline := time.Now().Add(2 * time.Second)
		for reg.Len() > 0 || runtime.NumGoroutine() > before+2 {
			if time.Now().After(deadline) {
				t.Fatalf("after the session: %d streams registered, %d goroutines (were %d)", reg.Len(), runtime.NumGoroutine(), before)
			}
			time.Sleep(5 * time.Millisecond)
		}
		l.Close()
		wg.Wait()
	})
}
