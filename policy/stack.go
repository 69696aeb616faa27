package policy

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// The guest's TCP/IP stack (gVisor netstack) on the VM's NIC, and the
// HTTP server that serves the flows it inspects. Every flow ends here:
// tcp.go and udp.go take them from the forwarders.

const (
	nicID tcpip.NICID = 1
	// tcpMaxInFlight bounds handshakes in progress (gVisor's forwarder
	// answers SYNs past it with nothing); established flows are bounded by
	// Limits.TCPFlows.
	tcpMaxInFlight = 512
)

func (n *Network) buildStack() error {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	n.stack = s
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	// A flow's buffers are what a guest that stops reading (or sends
	// faster than the shim reads) makes the shim hold, times tcp_flows:
	// they start at 256 KiB each way; receive buffers grow (up to 8 MiB)
	// only while the shim keeps reading at speed, so bulk uploads keep
	// their throughput.
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: 256 << 10, Max: 8 << 20}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv)
	// The send buffer starts at a whole number of full segments (about 254
	// KiB at the default MTU): a write that fills the room an ACK made is
	// then cut into full segments only, where 256 KiB left a 2 KiB
	// remainder segment in every write (the netstack never merges parts
	// of two writes into one segment). Its auto-tuning keeps it a
	// multiple of the segment size.
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: wholeSegments(n.cfg.MTU, 256<<10), Max: 8 << 20}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &snd)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &moderate)

	n.copyBufs = newCopyBuffers(n.cfg.MTU)
	ch, ep := newFrameLink(n.cfg.MTU, gatewayMAC)
	n.link = ch
	if err := s.CreateNIC(nicID, ep); err != nil {
		return fmt.Errorf("policy: create NIC: %s", err)
	}
	la := &linkAddrs{guest: defaultGuestAddress, gateway: defaultGateway}
	if err := s.AddProtocolAddress(nicID, la.gatewayAddress(), stack.AddressProperties{}); err != nil {
		return fmt.Errorf("policy: gateway address: %s", err)
	}
	n.addrs.Store(la)
	// Promiscuous and spoofing: the stack accepts flows to any destination
	// and answers as that destination, so every guest flow ends here.
	if err := s.SetPromiscuousMode(nicID, true); err != nil {
		return fmt.Errorf("policy: promiscuous mode: %s", err)
	}
	if err := s.SetSpoofing(nicID, true); err != nil {
		return fmt.Errorf("policy: spoofing: %s", err)
	}
	s.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}})

	tf := tcp.NewForwarder(s, 0, tcpMaxInFlight, n.handleTCP)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tf.HandlePacket)
	uf := udp.NewForwarder(s, n.handleUDP)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, uf.HandlePacket)
	return nil
}

// maxGuestHTTP2Streams bounds the concurrent requests of one guest HTTP/2
// connection.
const maxGuestHTTP2Streams = 32

func (n *Network) startHTTP() {
	n.tlsConfig = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: n.getCertificate,
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	protos.SetUnencryptedHTTP2(true)
	// A guest holding connections with unfinished headers holds at most
	// MaxHeaderBytes each (plus the server's 4 KiB slack), for at most
	// ReadHeaderTimeout; the number of connections is Limits.TCPFlows.
	n.httpSrv = &http.Server{
		Handler:           http.HandlerFunc(n.serveHTTP),
		Protocols:         &protos,
		ReadHeaderTimeout: n.cfg.Limits.HTTPHeaderTimeout,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    n.cfg.Limits.HTTPHeaderBytes,
		// One guest connection may carry this many HTTP/2 requests at
		// once (Go's default is 250); their upstream connections are
		// bounded across the container by Limits.UpstreamConnections.
		HTTP2:       &http.HTTP2Config{MaxConcurrentStreams: maxGuestHTTP2Streams},
		ErrorLog:    log.New(redactWriter{&n.auditor}, "", 0),
		BaseContext: func(net.Listener) context.Context { return n.ctx },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, flowKey{}, flowOf(c))
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				if f := flowOf(c); f != nil {
					f.release()
				}
			}
		},
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.httpSrv.Serve(n.httpLn)
	}()
}

// linkAddrs are the two ends of the guest link.
type linkAddrs struct {
	guest   netip.Prefix
	gateway netip.Addr
}

func (l *linkAddrs) gatewayAddress() tcpip.ProtocolAddress {
	return tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: toTCPIP(l.gateway), PrefixLen: l.guest.Bits()},
	}
}

func toTCPIP(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

func fromTCPIP(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip.Unmap()
}
