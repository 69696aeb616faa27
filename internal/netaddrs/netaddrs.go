// Package netaddrs lists a network namespace's own addresses: those of its
// interfaces and its routes' gateways. The egress policy counts them as
// internal in every mode (the host must not be reachable through its own
// addresses); the shim and `gondolin policy test` read them alike.
package netaddrs

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Own lists the addresses and route gateways of the caller's network
// namespace.
func Own() ([]netip.Addr, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	return List(h)
}

// List reads the addresses and route gateways (multipath next hops too),
// IPv4 and IPv6, of h's namespace.
func List(h *netlink.Handle) ([]netip.Addr, error) {
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	routes, err := h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if ip, ok := netip.AddrFromSlice(r.Gw); ok && !ip.IsUnspecified() {
			out = append(out, ip.Unmap())
		}
		for _, nh := range r.MultiPath {
			if ip, ok := netip.AddrFromSlice(nh.Gw); ok && !ip.IsUnspecified() {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}
