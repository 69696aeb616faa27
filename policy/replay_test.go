package policy

import (
	"context"
	"net/netip"
	"testing"
)

// A replayed lookup lands where a guest's would: in the synthetic pool,
// at the address a network's DNS answers first, and DecideConnect knows
// it by name.
func TestFirstSyntheticAddr(t *testing.T) {
	a := FirstSyntheticAddr()
	if !synthPrefix.Contains(a) {
		t.Fatalf("FirstSyntheticAddr() = %s, outside the pool %s", a, synthPrefix)
	}
	if got, _ := newSynthPool().addrFor("api.example.com"); got != a {
		t.Fatalf("a new pool's first address is %s, FirstSyntheticAddr() %s", got, a)
	}
	p := tablePolicy(t, map[string]string{annAllow: "api.example.com"})
	facts := StaticFacts{Synthetic: map[netip.Addr]string{a: "api.example.com"}}
	d := p.DecideConnect(facts, netip.AddrPortFrom(a, 443), DefaultGateway())
	if !d.Allow || !d.Flow.Synthetic || d.Flow.Name != "api.example.com" || d.Action != TCPInspect {
		t.Fatalf("DecideConnect to the first synthetic address = %+v", d)
	}
}

// DefaultGateway is the gateway a new network gives its guest.
func TestDefaultGateway(t *testing.T) {
	n, err := NewNetwork(context.Background(), Config{CAStateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if gw := n.GuestConfig().Gateway; gw != DefaultGateway() {
		t.Fatalf("GuestConfig().Gateway = %s, DefaultGateway() = %s", gw, DefaultGateway())
	}
	p := tablePolicy(t, map[string]string{annAllow: "*.example.com"})
	if d := p.DecideConnect(StaticFacts{}, netip.AddrPortFrom(DefaultGateway(), 80), DefaultGateway()); d.Allow {
		t.Fatalf("a connection to the gateway's port 80 = %+v, want refused", d)
	}
}
