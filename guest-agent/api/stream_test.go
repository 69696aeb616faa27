package api

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestStreamHeaderRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	in := &StreamHeader{Kind: StreamHeader_STDOUT, ContainerId: "c1", ExecId: "e1"}
	if err := WriteStreamHeader(&buf, in); err != nil {
		t.Fatal(err)
	}
	buf.WriteString("payload")
	out, err := ReadStreamHeader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if out.Kind != in.Kind || out.ContainerId != "c1" || out.ExecId != "e1" {
		t.Fatalf("got %v, want %v", out, in)
	}
	if rest := buf.String(); rest != "payload" {
		t.Fatalf("header consumed payload bytes: %q left", rest)
	}
}

func TestStreamHeaderTooLarge(t *testing.T) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], maxHeaderSize+1)
	_, err := ReadStreamHeader(bytes.NewReader(b[:]))
	if err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("want size error, got %v", err)
	}
}
