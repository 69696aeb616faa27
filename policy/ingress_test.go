package policy

import (
	"bufio"
	"context"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

func TestDialGuest(t *testing.T) {
	e := newEnv(t, Config{})
	ln, err := gonet.ListenTCP(e.g.s, tcpip.FullAddress{NIC: 1, Addr: toTCPIP(e.g.gc.Address.Addr()), Port: 8080}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Write([]byte("guest:" + line))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.n.DialGuest(ctx, 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hi\n"))
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "guest:hi\n" {
		t.Fatalf("through DialGuest: %q, %v", got, err)
	}
	if _, err := e.n.DialGuest(ctx, 8081); err == nil {
		t.Fatal("a port nothing listens on should refuse")
	}
	if len(e.auditRecords()) != 0 {
		t.Fatalf("ingress is not egress: nothing to audit, got %v", e.auditRecords())
	}
}

func TestSetLinkAddresses(t *testing.T) {
	e := newEnv(t, Config{})
	if err := e.n.SetLinkAddresses(netip.MustParsePrefix("172.17.0.2/16"), netip.MustParseAddr("10.0.0.1")); err == nil {
		t.Fatal("a gateway outside the guest's prefix must be refused")
	}
	if err := e.n.SetLinkAddresses(netip.MustParsePrefix("172.17.0.2/16"), netip.MustParseAddr("172.17.0.1")); err != nil {
		t.Fatal(err)
	}
	gc := e.n.GuestConfig()
	if gc.Address.String() != "172.17.0.2/16" || gc.Gateway.String() != "172.17.0.1" || gc.DNS[0] != gc.Gateway {
		t.Fatalf("GuestConfig after SetLinkAddresses: %+v", gc)
	}
	// Setting the same again is harmless.
	if err := e.n.SetLinkAddresses(netip.MustParsePrefix("172.17.0.2/16"), netip.MustParseAddr("172.17.0.1")); err != nil {
		t.Fatal(err)
	}
}

func TestDialGuestUDP(t *testing.T) {
	e := newEnv(t, Config{})
	srv, err := gonet.DialUDP(e.g.s, &tcpip.FullAddress{NIC: 1, Addr: toTCPIP(e.g.gc.Address.Addr()), Port: 5353}, nil, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo(append([]byte("guest:"), buf[:n]...), from)
		}
	}()
	// Two clients' flows each get their own replies.
	for _, msg := range []string{"one", "two"} {
		c, err := e.n.DialGuestUDP(5353)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "guest:"+msg {
			t.Fatalf("through DialGuestUDP: %q, %v", buf[:n], err)
		}
	}
	if len(e.auditRecords()) != 0 {
		t.Fatalf("ingress is not egress: nothing to audit, got %v", e.auditRecords())
	}
}
