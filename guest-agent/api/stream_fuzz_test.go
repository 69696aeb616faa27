package api

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

// FuzzReadStreamHeader reads the header that opens every stream of the
// channel from arbitrary bytes: it must never panic, never read past the
// header's declared size, and a header it accepts must write back the same.
func FuzzReadStreamHeader(f *testing.F) {
	for _, h := range []*StreamHeader{
		{Kind: StreamHeader_CONTROL},
		{Kind: StreamHeader_STDOUT, ContainerId: "c1", ExecId: "e1"},
		{Kind: StreamHeader_Kind(99), ContainerId: string(make([]byte, 300))},
	} {
		var b bytes.Buffer
		_ = WriteStreamHeader(&b, h)
		f.Add(b.Bytes())
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0x10, 0x01})
	f.Add([]byte{0, 0, 0, 2, 0x08})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, err := ReadStreamHeader(r)
		consumed := len(data) - r.Len()
		if consumed > 4+maxHeaderSize {
			t.Fatalf("read %d bytes for one header, limit %d", consumed, 4+maxHeaderSize)
		}
		if err != nil {
			return
		}
		if n := binary.BigEndian.Uint32(data); int(n)+4 != consumed {
			t.Fatalf("declared %d bytes, consumed %d", n, consumed)
		}
		var b bytes.Buffer
		if err := WriteStreamHeader(&b, h); err != nil {
			t.Fatal(err)
		}
		h2, err := ReadStreamHeader(&b)
		if err != nil || h2.Kind != h.Kind || h2.ContainerId != h.ContainerId || h2.ExecId != h.ExecId {
			t.Fatalf("round trip: %v, %v != %v", err, h2, h)
		}
		if _, err := b.ReadByte(); err != io.EOF {
			t.Fatal("round trip left bytes behind")
		}
	})
}
