package policy

import (
	"io"
	"testing"
)

// TestRelayHalfClose: a guest that shuts down its sending side of a raw
// relayed flow still gets the whole answer (the upstream sees a FIN, not a
// closed connection).
func TestRelayHalfClose(t *testing.T) {
	e := newEnv(t, Config{TCPAllow: allow(t, "db.example.com:5432")})
	conn, err := e.g.dialHost(e.g.ctx, "db.example.com:5432")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const size = 4 << 20
	go func() {
		conn.Write(make([]byte, size))
		conn.(interface{ CloseWrite() error }).CloseWrite()
	}()
	// The echo server sends back what it got, then closes on our FIN.
	n, err := io.Copy(io.Discard, conn)
	if err != nil || n != size {
		t.Fatalf("echoed %d of %d bytes: %v", n, size, err)
	}
}
