package policy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// The guest link by default: a /24 with the host side (gateway and DNS) at
// .1 and the guest at .3, as in the TypeScript original. SetLinkAddresses
// replaces them with the container network namespace's (Docker's
// 172.17.0.x), so the guest sees the address its users expect.
var (
	defaultGuestAddress = netip.MustParsePrefix("192.168.127.3/24")
	defaultGateway      = netip.MustParseAddr("192.168.127.1")
	guestMAC            = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	gatewayMAC          = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0xfe}
)

const (
	nicID tcpip.NICID = 1
	// tcpMaxInFlight bounds handshakes in progress (gVisor's forwarder
	// answers SYNs past it with nothing); established flows are bounded by
	// Limits.TCPFlows.
	tcpMaxInFlight = 512
)

// Network is one guest's network. Create it with NewNetwork, attach the
// VM's NIC stream with AttachStream, and Close it when the VM is gone.
type Network struct {
	cfg Config
	// policy makes every egress decision (decide.go); facts answers its
	// questions from this network's DNS and resolver (facts.go).
	policy *Policy
	facts  Facts

	ctx    context.Context
	cancel context.CancelFunc

	stack *stack.Stack
	link  *channel.Endpoint

	ca      *authority
	secrets *secretSet
	synth   *synthPool
	records dnsRecords
	resolv  resolveCache
	udpSeen deniedCache
	dnsSem  chan struct{}

	tlsConfig *tls.Config
	httpSrv   *http.Server
	httpLn    *connListener

	// auditor writes the audit records and logs (audit.go).
	auditor

	// tcpFlows and udpFlows bound the guest's flows (limits.go).
	tcpFlows flowLimit
	udpFlows udpTable

	// addrs are the guest's address and the gateway's.
	addrs atomic.Pointer[linkAddrs]

	attachMu     sync.Mutex
	attachCancel context.CancelFunc
	attachDone   chan struct{}
	closed       bool

	closeOnce sync.Once
	wg        sync.WaitGroup
}

// NewNetwork builds the guest network for cfg. It returns ErrNoNetwork for
// net.mode=none. ctx bounds the network's life as Close does.
func NewNetwork(ctx context.Context, cfg Config) (*Network, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	ca, err := loadOrCreateCA(cfg.CAStateDir)
	if err != nil {
		return nil, err
	}
	var hostAddrs *hostAddrSet
	if cfg.HostAddrs != nil {
		if hostAddrs, err = newHostAddrSet(ctx, cfg.HostAddrs, cfg.Logger.Warn); err != nil {
			return nil, err
		}
	}
	secrets := newSecretSet(cfg.Secrets)
	n := &Network{
		cfg:     cfg,
		policy:  newPolicy(&cfg, hostAddrs, secrets),
		ca:      ca,
		secrets: secrets,
		synth:   newSynthPool(),
		dnsSem:  make(chan struct{}, cfg.Limits.DNSInFlight),
		httpLn:  newConnListener(),
	}
	n.facts = netFacts{n}
	n.auditor = newAuditor(&n.cfg, secrets)
	n.tcpFlows.max = cfg.Limits.TCPFlows
	n.udpFlows.max = cfg.Limits.UDPFlows
	n.ctx, n.cancel = context.WithCancel(ctx)
	if err := n.buildStack(); err != nil {
		n.cancel()
		return nil, err
	}
	n.startHTTP()
	go func() {
		<-n.ctx.Done()
		n.Close()
	}()
	return n, nil
}

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
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 256 << 10, Max: 8 << 20}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &snd)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &moderate)

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
		ReadHeaderTimeout: n.cfg.Limits.HTTPHeaderTimeout.Duration,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    n.cfg.Limits.HTTPHeaderBytes,
		ErrorLog:          log.New(redactWriter{&n.auditor}, "", 0),
		BaseContext:       func(net.Listener) context.Context { return n.ctx },
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

// AttachStream connects the VM's NIC: conn carries Ethernet frames, each
// preceded by its 4-byte big-endian length (QEMU -netdev stream). A later
// call replaces the previous stream (QEMU reconnected). It returns at once;
// the stream is served until it fails or the network is closed.
func (n *Network) AttachStream(conn net.Conn) error {
	n.attachMu.Lock()
	defer n.attachMu.Unlock()
	if n.closed || n.ctx.Err() != nil {
		conn.Close()
		return errors.New("policy: network is closed")
	}
	if n.attachCancel != nil {
		n.attachCancel()
		<-n.attachDone
	}
	ctx, cancel := context.WithCancel(n.ctx)
	done := make(chan struct{})
	n.attachCancel, n.attachDone = cancel, done
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer close(done)
		if err := pumpFrames(ctx, conn, n.link, n.cfg.MTU); err != nil {
			n.logWarn("NIC stream ended", "error", err)
		}
	}()
	return nil
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

// SetLinkAddresses sets the guest's address and the gateway's (which the
// host side answers as), before the guest configures its NIC from
// GuestConfig. Both must be IPv4, the gateway inside the guest's prefix.
func (n *Network) SetLinkAddresses(guest netip.Prefix, gateway netip.Addr) error {
	if !guest.Addr().Is4() || !gateway.Is4() || !guest.Masked().Contains(gateway) || guest.Addr() == gateway {
		return fmt.Errorf("policy: guest address %s with gateway %s: want IPv4, the gateway inside the guest's prefix and distinct from it", guest, gateway)
	}
	old := n.addrs.Load()
	la := &linkAddrs{guest: guest, gateway: gateway}
	if *old == *la {
		return nil
	}
	if err := n.stack.AddProtocolAddress(nicID, la.gatewayAddress(), stack.AddressProperties{}); err != nil {
		return fmt.Errorf("policy: gateway address %s: %s", gateway, err)
	}
	if old.gateway != gateway {
		if err := n.stack.RemoveAddress(nicID, toTCPIP(old.gateway)); err != nil {
			return fmt.Errorf("policy: remove gateway address %s: %s", old.gateway, err)
		}
	}
	n.addrs.Store(la)
	return nil
}

// GuestConfig is what the guest must configure on eth0.
func (n *Network) GuestConfig() GuestConfig {
	la := n.addrs.Load()
	return GuestConfig{
		Address:    la.guest,
		Gateway:    la.gateway,
		DNS:        []netip.Addr{la.gateway},
		MTU:        n.cfg.MTU,
		MAC:        append(net.HardwareAddr(nil), guestMAC...),
		GatewayMAC: append(net.HardwareAddr(nil), gatewayMAC...),
	}
}

// CACertPEM is the CA certificate the guest must trust for HTTPS.
func (n *Network) CACertPEM() []byte { return append([]byte(nil), n.ca.certPEM...) }

// Placeholder returns the value the guest sees in place of secret name.
func (n *Network) Placeholder(name string) (string, bool) {
	p, ok := n.secrets.placeholders()[name]
	return p, ok
}

// Placeholders maps every secret name to its placeholder, for the
// container's environment.
func (n *Network) Placeholders() map[string]string { return n.secrets.placeholders() }

// Close stops the network: the NIC stream, every flow and the stack.
func (n *Network) Close() error {
	n.closeOnce.Do(func() {
		n.cancel()
		n.httpLn.Close()
		n.httpSrv.Close()
		n.attachMu.Lock()
		n.closed = true
		if n.attachCancel != nil {
			n.attachCancel()
		}
		n.attachMu.Unlock()
		n.wg.Wait()
		n.stack.Close()
		n.link.Close()
		n.stack.Wait()
		n.auditor.close()
	})
	return nil
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
