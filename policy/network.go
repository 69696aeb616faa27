package policy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
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
	// copyBufs carry upstream data to the guest (relay.go).
	copyBufs *copyBuffers

	// auditor writes the audit records and logs (audit.go).
	auditor

	// tcpFlows and udpFlows bound the guest's flows (limits.go).
	tcpFlows flowLimit
	// upstreams bounds the host-side connections dialled for the guest.
	upstreams flowLimit
	udpFlows  udpTable

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
	n.upstreams.max = cfg.Limits.UpstreamConnections
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

// GuestNIC is the MAC and MTU of a guest's NIC under a Config that sets
// no MTU (the runtime's): what a VM started before its network exists, a
// VM pool's, is given.
func GuestNIC() (net.HardwareAddr, int) {
	return append(net.HardwareAddr(nil), guestMAC...), defaultMTU
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
