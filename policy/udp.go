package policy

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/earendil-works/gondolin-containerd/oci"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const udpIdleTimeout = 60 * time.Second

// handleUDP is called for the first datagram of every guest UDP flow.
// DNS (port 53 to any address) is answered here; in mode open other UDP
// to public addresses is relayed; everything else is refused (the stack
// answers ICMP port unreachable).
func (n *Network) handleUDP(r *udp.ForwarderRequest) bool {
	id := r.ID()
	dst := netip.AddrPortFrom(fromTCPIP(id.LocalAddress), id.LocalPort)
	rec := AuditRecord{Protocol: "udp", Host: dst.Addr().String(), Port: dst.Port(), Dest: dst.String()}
	if dst.Port() == 53 {
		conn, ok := n.acceptUDP(r)
		if ok {
			go n.serveDNSUDP(conn)
		}
		return true
	}
	if n.cfg.Mode != oci.NetModeOpen {
		if n.udpSeen.first(dst.String()) {
			n.audit(rec.deny("UDP other than DNS is not allowed in net.mode=policy"))
		}
		return false
	}
	var name string
	if synthPrefix.Contains(dst.Addr()) {
		var ok bool
		if name, ok = n.synth.nameFor(dst.Addr()); !ok {
			return false
		}
		rec.Host = name
	} else if n.cfg.addrBlocked("", dst.Addr(), dst.Port()) {
		if n.udpSeen.first(dst.String()) {
			n.audit(rec.deny("internal address; to reach it, name it in " + oci.AnnotationNetAllowInternal))
		}
		return false
	}
	conn, ok := n.acceptUDP(r)
	if !ok {
		return true
	}
	go n.relayUDP(conn, dst, name, rec)
	return true
}

func (n *Network) acceptUDP(r *udp.ForwarderRequest) (*gonet.UDPConn, bool) {
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	if err != nil {
		return nil, false
	}
	return gonet.NewUDPConn(&wq, ep), true
}

func (n *Network) relayUDP(guest *gonet.UDPConn, dst netip.AddrPort, name string, rec AuditRecord) {
	defer guest.Close()
	ctx, cancel := context.WithTimeout(n.ctx, dialTimeout)
	addrs := []netip.Addr{dst.Addr()}
	if name != "" {
		var d *denial
		if addrs, d = n.resolveChecked(ctx, name, dst.Port()); d != nil {
			cancel()
			n.audit(rec.deny(d.reason))
			return
		}
	}
	up, err := n.cfg.Dialer(ctx, "udp", netip.AddrPortFrom(addrs[0], dst.Port()).String())
	cancel()
	if err != nil {
		n.audit(rec.deny("dial failed: " + err.Error()))
		return
	}
	defer up.Close()
	n.audit(rec.allow("net.mode=open"))
	stop := context.AfterFunc(n.ctx, func() {
		guest.Close()
		up.Close()
	})
	defer stop()
	done := make(chan struct{})
	go func() {
		copyDatagrams(guest, up)
		close(done)
	}()
	copyDatagrams(up, guest)
	guest.Close()
	up.Close()
	<-done
}

// copyDatagrams copies datagrams until a read fails or the flow has been
// idle for udpIdleTimeout.
func copyDatagrams(dst, src net.Conn) {
	buf := make([]byte, 65535)
	for {
		src.SetReadDeadline(time.Now().Add(udpIdleTimeout))
		m, err := src.Read(buf)
		if err != nil {
			dst.Close()
			return
		}
		if _, err := dst.Write(buf[:m]); err != nil {
			src.Close()
			return
		}
	}
}
