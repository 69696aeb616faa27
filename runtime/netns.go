package runtime

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	goruntime "runtime"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
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
func createNetNS(pinPath string) (_ *netNS, retErr error) {
	if err := os.WriteFile(pinPath, nil, 0o600); err != nil {
		return nil, fmt.Errorf("create network namespace mount point: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = unix.Unmount(pinPath, unix.MNT_DETACH)
			_ = os.Remove(pinPath)
		}
	}()
	errc := make(chan error, 1)
	go func() {
		// This thread ends up in the new namespace and is never given
		// back to the scheduler: the goroutine exits with it locked, so
		// Go terminates the thread.
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
	if err := <-errc; err != nil {
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

// ipv4Link returns the address (with its prefix) and default gateway of the
// namespace's first interface that has both, as Docker or a CNI plugin
// configured it. ok is false for the host's namespace (the guest does not
// mirror the host) and for a namespace without such an interface.
func (n *netNS) ipv4Link() (addr netip.Prefix, gateway netip.Addr, ok bool, err error) {
	if n.f == nil {
		return netip.Prefix{}, netip.Addr{}, false, nil
	}
	err = n.do(func() error {
		// thread-self: /proc/net would show the shim's own namespace.
		routes, err := os.ReadFile("/proc/thread-self/net/route")
		if err != nil {
			return err
		}
		ifName, gw, found := defaultRoute(string(routes))
		if !found {
			return nil
		}
		iface, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		addrs, err := iface.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			ipn, isIPNet := a.(*net.IPNet)
			if !isIPNet || ipn.IP.To4() == nil {
				continue
			}
			ip, _ := netip.AddrFromSlice(ipn.IP.To4())
			bits, _ := ipn.Mask.Size()
			p := netip.PrefixFrom(ip, bits)
			if p.Masked().Contains(gw) {
				addr, gateway, ok = p, gw, true
				return nil
			}
		}
		return nil
	})
	return addr, gateway, ok, err
}

// defaultRoute finds the IPv4 default route in /proc/net/route: its
// interface and gateway.
func defaultRoute(table string) (iface string, gw netip.Addr, ok bool) {
	for _, line := range strings.Split(table, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		b, err := hex.DecodeString(f[2])
		if err != nil || len(b) != 4 {
			continue
		}
		// The kernel prints the address as a host-order (little-endian) word.
		gw = netip.AddrFrom4([4]byte{b[3], b[2], b[1], b[0]})
		if gw.IsUnspecified() {
			continue
		}
		return f[0], gw, true
	}
	return "", netip.Addr{}, false
}

// empty reports whether a namespace of its own has no interface but lo:
// one nothing configured (docker --network none, a plain ctr run). The
// host's namespace is never empty.
func (n *netNS) empty() (bool, error) {
	if n.f == nil {
		return false, nil
	}
	empty := true
	err := n.do(func() error {
		ifaces, err := net.Interfaces()
		if err != nil {
			return err
		}
		for _, i := range ifaces {
			if i.Flags&net.FlagLoopback == 0 {
				empty = false
			}
		}
		return nil
	})
	return empty, err
}
