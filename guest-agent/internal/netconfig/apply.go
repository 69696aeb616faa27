package netconfig

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinkWait bounds the wait for the NIC to appear: its driver registers it
// while probing, which the module loading at boot normally finished long
// before the host asks.
const LinkWait = 2 * time.Second

// ApplyRoot applies cfg in the calling thread's network namespace.
func ApplyRoot(cfg Config) error {
	// Route only: the minimal guest kernel has no netfilter or xfrm, whose
	// netlink sockets a handle would otherwise open too.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open a netlink socket: %w", err)
	}
	defer h.Close()
	return Apply(h, cfg, LinkWait)
}

// Apply configures the NIC with cfg's MAC through h: MTU, address, up,
// then lo up and the default route (which needs the link up with its
// address, for the gateway to be reachable). Every step replaces what is
// there, so applying the same cfg twice is harmless.
func Apply(h *netlink.Handle, cfg Config, wait time.Duration) error {
	link, err := findLink(h, cfg.MAC, wait)
	if err != nil {
		return err
	}
	name := link.Attrs().Name
	if cfg.MTU != 0 && link.Attrs().MTU != cfg.MTU {
		if err := h.LinkSetMTU(link, cfg.MTU); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", cfg.MTU, name, err)
		}
	}
	if err := setAddresses(h, link, cfg.Addresses()); err != nil {
		return err
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	// Boot brought lo up already; the kernel gives it 127.0.0.1/8 then.
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	route := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Gw:        net.IP(cfg.Gateway.AsSlice()),
		Protocol:  unix.RTPROT_STATIC,
		// On-link: without a prefix route the gateway is not otherwise
		// known to be reachable on this link.
		Flags: int(netlink.FLAG_ONLINK),
	} // no Dst: the default route
	if err := h.RouteReplace(route); err != nil {
		return fmt.Errorf("add default route via %s dev %s: %w", cfg.Gateway, name, err)
	}
	return nil
}

// setAddresses makes want the link's IPv4 addresses: it adds (or
// refreshes) each and removes any other, left by an earlier request.
//
// No prefix route: every packet, to the subnet too, goes to the gateway's
// MAC. The host side is a userspace stack that answers ARP only for the
// gateway, and other hosts of the subnet (containers on the same Docker
// network) are reached through it, under policy.
func setAddresses(h *netlink.Handle, link netlink.Link, want []netip.Prefix) error {
	name := link.Attrs().Name
	keep := map[netip.Prefix]bool{}
	for _, p := range want {
		keep[p] = true
	}
	// Stale addresses go first: removing a subnet's primary address
	// takes the subnet's secondary ones with it, new ones included.
	have, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list the addresses of %s: %w", name, err)
	}
	for _, a := range have {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		bits, _ := a.Mask.Size()
		if ok && keep[netip.PrefixFrom(ip, bits)] {
			continue
		}
		if err := h.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove address %s from %s: %w", a.IPNet, name, err)
		}
	}
	for _, p := range want {
		addr := &netlink.Addr{IPNet: &net.IPNet{
			IP:   net.IP(p.Addr().AsSlice()),
			Mask: net.CIDRMask(p.Bits(), 32),
		}, Flags: unix.IFA_F_NOPREFIXROUTE}
		if err := h.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("add address %s to %s: %w", p, name, err)
		}
	}
	return nil
}

// findLink returns the interface with mac, waiting up to wait for it. The
// error lists the interfaces there are, so a wrong MAC is easy to spot.
func findLink(h *netlink.Handle, mac net.HardwareAddr, wait time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(wait)
	for {
		links, err := h.LinkList()
		// An interrupted dump (links changing meanwhile) is tried again.
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("list network interfaces: %w", err)
		}
		if err == nil {
			for _, l := range links {
				if bytes.Equal(l.Attrs().HardwareAddr, mac) {
					return l, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w %s (found: %s)", ErrNoLink, mac, describeLinks(links))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func describeLinks(links []netlink.Link) string {
	if len(links) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(links))
	for _, l := range links {
		a := l.Attrs()
		mac := a.HardwareAddr.String()
		if mac == "" {
			mac = "no MAC"
		}
		parts = append(parts, fmt.Sprintf("%s %s", a.Name, mac))
	}
	return strings.Join(parts, ", ")
}

// DetachRoot unbinds the NIC with mac from its driver, so that the
// interface disappears from the guest. It returns once the interface is
// gone; the driver's teardown may still be finishing then (see untilGone),
// and an error it meets later goes to done, which may be nil.
func DetachRoot(mac net.HardwareAddr, done func(error)) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open a netlink socket: %w", err)
	}
	defer h.Close()
	link, err := findLink(h, mac, LinkWait)
	if err != nil {
		return err
	}
	iface := "/sys/class/net/" + link.Attrs().Name
	gone := func() bool {
		_, err := os.Lstat(iface)
		return errors.Is(err, os.ErrNotExist)
	}
	return untilGone(func() error { return unbind(iface + "/device") }, gone, goneInterval, done)
}

// goneInterval is how often DetachRoot looks for the interface.
const goneInterval = time.Millisecond

// untilGone runs unbind and returns as soon as gone reports the interface
// gone (looking every interval), or unbind has returned. The kernel
// unlists an interface first and then waits, sleeping in jiffies, for the
// last references to it to drop: that half of an unbind (~30 ms here) need
// not delay the container. What unbind returns after untilGone did goes to
// done.
func untilGone(unbind func() error, gone func() bool, interval time.Duration, done func(error)) error {
	result := make(chan error, 1)
	go func() { result <- unbind() }()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case err := <-result:
			return err
		case <-t.C:
		}
		if gone() {
			go func() {
				if err := <-result; done != nil {
					done(err)
				}
			}()
			return nil
		}
	}
}

// unbind writes the device's name to its driver's unbind file.
func unbind(devicePath string) error {
	dev, err := filepath.EvalSymlinks(devicePath)
	if err != nil {
		return fmt.Errorf("find the NIC's device: %w", err)
	}
	if err := os.WriteFile(filepath.Join(devicePath, "driver", "unbind"), []byte(filepath.Base(dev)), 0); err != nil {
		return fmt.Errorf("unbind %s from its driver: %w", filepath.Base(dev), err)
	}
	return nil
}
