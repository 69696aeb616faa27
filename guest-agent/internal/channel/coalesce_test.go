package channel

import (
	"bytes"
	"encoding/binary"
	"testing"
)

type recordingConn struct {
	bytes.Buffer
	writes [][]byte
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.writes = append(r.writes, append([]byte(nil), p...))
	return r.Buffer.Write(p)
}
func (r *recordingConn) Close() error { return nil }

func header(typ byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint32(h[4:8], 3)
	binary.BigEndian.PutUint32(h[8:12], length)
	return h
}

// A data frame's header and body go out as one write; frames without a
// body (a window update) and writes that are not a header pass through.
func TestCoalescingConn(t *testing.T) {
	rec := &recordingConn{}
	c := newCoalescingConn(rec)
	if n, err := c.Write(header(yamuxTypeData, 5)); n != yamuxHeaderSize || err != nil {
		t.Fatalf("header: %d %v", n, err)
	}
	if len(rec.writes) != 0 {
		t.Fatal("the header went out alone")
	}
	if n, err := c.Write([]byte("hello")); n != 5 || err != nil {
		t.Fatalf("body: %d %v", n, err)
	}
	c.Write(header(1, 262144)) // window update: no body
	c.Write(header(yamuxTypeData, 0))
	if len(rec.writes) != 3 || len(rec.writes[0]) != yamuxHeaderSize+5 || !bytes.HasSuffix(rec.writes[0], []byte("hello")) ||
		len(rec.writes[1]) != yamuxHeaderSize || len(rec.writes[2]) != yamuxHeaderSize {
		t.Fatalf("writes: %q", rec.writes)
	}
	want := append(append(header(yamuxTypeData, 5), "hello"...), append(header(1, 262144), header(yamuxTypeData, 0)...)...)
	if !bytes.Equal(rec.Bytes(), want) {
		t.Fatal("the byte stream changed")
	}
}
