package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	goruntime "runtime"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netNS is the network namespace the container's egress is dialled from:
// the guest's traffic ends in the shim, and what policy allows leaves the
// host from this namespace, so its routes, CNI setup and firewall apply as
// they would to a runc container.
type netNS struct {
	// f is the namespace; nil means the shim's own (the host's, for a
	// container that asked for no network namespace).
	f *os.File
	// created is the bind mount that keeps a namespace the shim created
	// alive; "" when the spec named an existing one.
	created string
}

// specNetNS returns the spec's network namespace: none in the spec means
// the host's; a path means that namespace; no path means a new, empty one,
// which the shim creates and pins at pinPath (as runc would create it).
func specNetNS(spec *specs.Spec, pinPath string) (*netNS, error) {
	if spec.Linux == nil {
		return &netNS{}, nil
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type != specs.NetworkNamespace {
			continue
		}
		if ns.Path != "" {
			f, err := os.Open(ns.Path)
			if err != nil {
				return nil, fmt.Errorf("open the spec's network namespace %s: %w", ns.Path, err)
			}
			return &netNS{f: f}, nil
		}
		return createNetNS(pinPath)
	}
	return &netNS{}, nil
}

// createNetNS makes a new network namespace on a thread of its own and
// bind-mounts it at pinPath so that it lives as long as the container.
func createNetNS(pinPath string) (*netNS, error) {
	return pinNetNS(pinPath, func() error {
		errc := make(chan error, 1)
		go func() {
			// This thread ends up in the new namespace and is never
			// given back to the scheduler: the goroutine exits with it
			// locked, so Go terminates the thread.
			goruntime.LockOSThread()
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				errc <- fmt.Errorf("unshare network namespace: %w", err)
				return
			}
			self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
			if err := unix.Mount(self, pinPath, "", unix.MS_BIND, ""); err != nil {
				errc <- fmt.Errorf("pin network namespace at %s: %w", pinPath, err)
				return
			}
			errc <- nil
		}()
		return <-errc
	})
}

// pinNetNS creates the file pinPath, has mount bind-mount a network
// namespace onto it, and opens it: a namespace the shim holds until
// Close. On error nothing is left at pinPath.
func pinNetNS(pinPath string, mount func() error) (_ *netNS, retErr error) {
	if err := os.WriteFile(pinPath, nil, 0o600); err != nil {
		return nil, fmt.Errorf("create network namespace mount point: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = unix.Unmount(pinPath, unix.MNT_DETACH)
			_ = os.Remove(pinPath)
		}
	}()
	if err := mount(); err != nil {
		return nil, err
	}
	f, err := os.Open(pinPath)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", pinPath, err)
	}
	return &netNS{f: f, created: pinPath}, nil
}

// Path is where hooks and tools find the namespace ("" for the host's).
func (n *netNS) Path() string {
	if n.f == nil {
		return ""
	}
	return n.f.Name()
}

// do runs fn on a thread that has joined the namespace. Sockets keep the
// namespace they were created in, so a connection fn dials stays in it.
func (n *netNS) do(fn func() error) error {
	if n.f == nil {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			goruntime.UnlockOSThread()
			errc <- fmt.Errorf("open current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(n.f.Fd()), unix.CLONE_NEWNET); err != nil {
			goruntime.UnlockOSThread()
			errc <- fmt.Errorf("join network namespace %s: %w", n.f.Name(), err)
			return
		}
		ferr := fn()
		// A thread that cannot go back stays locked, so Go retires it
		// instead of running other goroutines in the wrong namespace.
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			goruntime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// dial dials address from the namespace.
func (n *netNS) dial(ctx context.Context, network, address string) (net.Conn, error) {
	var conn net.Conn
	err := n.do(func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		conn = c
		return err
	})
	return conn, err
}

// Close releases the namespace; one the shim created is unpinned and so
// destroyed once nothing else holds it.
func (n *netNS) Close() error {
	if n.f == nil {
		return nil
	}
	n.f.Close()
	if n.created == "" {
		return nil
	}
	return removeNetNSPin(n.created)
}

// removeNetNSPin unmounts and removes a namespace pinned by createNetNS.
func removeNetNSPin(pinPath string) error {
	if err := unix.Unmount(pinPath, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unpin network namespace %s: %w", pinPath, err)
	}
	if err := os.Remove(pinPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove network namespace pin %s: %w", pinPath, err)
	}
	return nil
}

// nsLink is what the guest's NIC takes from the namespace.
type nsLink struct {
	// empty: the namespace has no interface but lo (nothing configured
	// it: docker --network none, a plain ctr run).
	empty bool
	// addr (with its prefix) and gateway of the default route's
	// interface; ok is false when there is none.
	addr    netip.Prefix
	gateway netip.Addr
	ok      bool
	// extra are the other IPv4 addresses of the namespace's interfaces
	// (a second Docker network), in a stable order.
	extra []netip.Prefix
}

// equal reports whether two readings give the guest the same network.
func (l nsLink) equal(o nsLink) bool {
	return l.empty == o.empty && l.ok == o.ok && l.addr == o.addr && l.gateway == o.gateway && slices.Equal(l.extra, o.extra)
}

// link reads, in one netlink session, whether the namespace is empty, the
// address and gateway of its IPv4 default route's interface and its other
// addresses, as Docker or a CNI plugin configured them. The host's
// namespace is neither empty nor mirrored: the guest keeps its own
// addresses there.
func (n *netNS) link() (nsLink, error) {
	if n.f == nil {
		return nsLink{}, nil
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(int(n.f.Fd())), unix.NETLINK_ROUTE)
	if err != nil {
		return nsLink{}, fmt.Errorf("netlink in %s: %w", n.f.Name(), err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nsLink{}, fmt.Errorf("list interfaces: %w", err)
	}
	l := nsLink{empty: true}
	loopback := map[int]bool{}
	for _, link := range links {
		if link.Attrs().Flags&net.FlagLoopback != 0 {
			loopback[link.Attrs().Index] = true
		} else {
			l.empty = false
		}
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nsLink{}, fmt.Errorf("list addresses: %w", err)
	}
	var all []netip.Prefix
	byLink := map[int][]netip.Prefix{}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok || loopback[a.LinkIndex] || a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		bits, _ := a.Mask.Size()
		p := netip.PrefixFrom(ip, bits)
		all = append(all, p)
		byLink[a.LinkIndex] = append(byLink[a.LinkIndex], p)
	}
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nsLink{}, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if !defaultRoute(r) || l.ok {
			continue
		}
		gw, _ := netip.AddrFromSlice(r.Gw.To4())
		for _, p := range byLink[r.LinkIndex] {
			if p.Masked().Contains(gw) && p.Addr() != gw {
				l.addr, l.gateway, l.ok = p, gw, true
				break
			}
		}
	}
	for _, p := range all {
		if !l.ok || p != l.addr {
			l.extra = append(l.extra, p)
		}
	}
	slices.SortFunc(l.extra, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return l, nil
}

// defaultRoute reports whether r is an IPv4 default route with a gateway.
func defaultRoute(r netlink.Route) bool {
	if r.Gw == nil || r.Gw.To4() == nil || r.Gw.IsUnspecified() {
		return false
	}
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}
