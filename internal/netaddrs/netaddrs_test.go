package netaddrs

import (
	"net/netip"
	"slices"
	"testing"
)

// The namespace's loopback address is among its own.
func TestOwnHasLoopback(t *testing.T) {
	addrs, err := Own()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(addrs, netip.MustParseAddr("127.0.0.1")) {
		t.Fatalf("own addresses %v lack 127.0.0.1", addrs)
	}
}
