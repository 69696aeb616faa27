package policy

import (
	"context"
	"fmt"
	"net"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// DialGuest opens a TCP connection to port on the guest, from the gateway
// address: how the runtime forwards ingress (a published port) into the VM.
// Ingress is not egress: it is neither checked against the policy nor
// audited, as a runc container's listening ports are not.
func (n *Network) DialGuest(ctx context.Context, port uint16) (net.Conn, error) {
	if n.ctx.Err() != nil {
		return nil, fmt.Errorf("policy: network is closed")
	}
	conn, err := gonet.DialContextTCP(ctx, n.stack, tcpip.FullAddress{
		NIC:  nicID,
		Addr: toTCPIP(n.addrs.Load().guest.Addr()),
		Port: port,
	}, ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("policy: connect to guest port %d: %w", port, err)
	}
	return conn, nil
}

// DialGuestUDP opens a UDP flow to port on the guest, from the gateway
// address: each ingress client gets one, so the guest's replies come back
// on it (a bound, connected endpoint is matched before the egress relay).
func (n *Network) DialGuestUDP(port uint16) (net.Conn, error) {
	if n.ctx.Err() != nil {
		return nil, fmt.Errorf("policy: network is closed")
	}
	la := n.addrs.Load()
	conn, err := gonet.DialUDP(n.stack,
		&tcpip.FullAddress{NIC: nicID, Addr: toTCPIP(la.gateway)},
		&tcpip.FullAddress{NIC: nicID, Addr: toTCPIP(la.guest.Addr()), Port: port},
		ipv4.ProtocolNumber)
	if err != nil {
		return nil, fmt.Errorf("policy: UDP flow to guest port %d: %s", port, err)
	}
	return conn, nil
}
