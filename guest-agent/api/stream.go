package api

import (
	"encoding/binary"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"
)

// maxHeaderSize bounds a stream header so a corrupt stream cannot make either
// side allocate without limit.
const maxHeaderSize = 4096

// WriteStreamHeader writes h as the first bytes of a newly opened stream.
func WriteStreamHeader(w io.Writer, h *StreamHeader) error {
	b, err := proto.Marshal(h)
	if err != nil {
		return fmt.Errorf("marshal stream header: %w", err)
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write stream header: %w", err)
	}
	return nil
}

// ReadStreamHeader reads the header that opens a stream.
func ReadStreamHeader(r io.Reader) (*StreamHeader, error) {
	var lenBuf [4]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return nil, fmt.Errorf("read stream header length: %w", err)
	}
	n := binary.BigEndian.Uint32(lenBuf[:])
	if n > maxHeaderSize {
		return nil, fmt.Errorf("stream header of %d bytes exceeds the %d byte limit", n, maxHeaderSize)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("read stream header: %w", err)
	}
	h := &StreamHeader{}
	if err := proto.Unmarshal(b, h); err != nil {
		return nil, fmt.Errorf("unmarshal stream header: %w", err)
	}
	return h, nil
}
