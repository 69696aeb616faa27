package netconfig

import (
	"errors"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inNewNetns runs f on a thread of its own in a new, empty network
// namespace with a netlink handle there. The thread is never unlocked, so
// it ends with the goroutine and nothing else runs in that namespace.
func inNewNetns(t *testing.T, f func(h *netlink.Handle) error) error {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- errSkip{err}
			return
		}
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			ch <- err
			return
		}
		defer h.Close()
		ch <- f(h)
	}()
	err := <-ch
	var skip errSkip
	if errors.As(err, &skip) {
		t.Skipf("no network namespace: %v", skip.err)
	}
	return err
}

type errSkip struct{ err error }

func (e errSkip) Error() string { return e.err.Error() }

// TestApply configures one end of a veth pair (its peer up, so the link
// has carrier) in a private namespace and checks what the kernel has. The
// addresses are TEST-NET-1 (RFC 5737); nothing leaves the namespace.
func TestApply(t *testing.T) {
	cfg, err := Parse("02:00:00:00:00:01", "192.0.2.3/24", "192.0.2.1", 1400, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = inNewNetns(t, func(h *netlink.Handle) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "nic0", HardwareAddr: cfg.MAC}, PeerName: "peer0"}
		if err := h.LinkAdd(veth); err != nil {
			return errSkip{err}
		}
		peer, err := h.LinkByName("peer0")
		if err != nil {
			return err
		}
		if err := h.LinkSetUp(peer); err != nil {
			return err
		}
		for i := 0; i < 2; i++ { // the second time must be harmless
			if err := Apply(h, cfg, 0); err != nil {
				t.Errorf("Apply #%d: %v", i+1, err)
			}
		}
		link, err := h.LinkByName("nic0")
		if err != nil {
			return err
		}
		if link.Attrs().MTU != 1400 || link.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("nic0: MTU %d, flags %v", link.Attrs().MTU, link.Attrs().Flags)
		}
		addrs, err := h.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || addrs[0].IPNet.String() != "192.0.2.3/24" {
			t.Errorf("nic0 addresses: %v", addrs)
		}
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("lo is not up")
		}
		routes, err := h.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		defaults := 0
		for _, r := range routes {
			if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
				defaults++
				if !r.Gw.Equal(net.ParseIP("192.0.2.1")) || r.LinkIndex != link.Attrs().Index {
					t.Errorf("default route %v", r)
				}
			}
		}
		if defaults != 1 {
			t.Errorf("%d default routes in %v", defaults, routes)
		}

		// The namespace changed (docker network connect, then a new
		// primary address): the NIC carries exactly the new set.
		moved, err := Parse("02:00:00:00:00:01", "192.0.2.4/24", "192.0.2.1", 1400, []string{"198.51.100.7/16"})
		if err != nil {
			return err
		}
		if err := Apply(h, moved, 0); err != nil {
			t.Errorf("Apply after a change: %v", err)
		}
		addrs, err = h.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var got []string
		for _, a := range addrs {
			got = append(got, a.IPNet.String())
		}
		if strings.Join(got, " ") != "192.0.2.4/24 198.51.100.7/16" {
			t.Errorf("nic0 addresses after a change: %v", got)
		}

		// A MAC no interface has: the error lists what is there.
		other := cfg
		other.MAC = net.HardwareAddr{2, 0, 0, 0, 0, 9}
		start := time.Now()
		err = Apply(h, other, 50*time.Millisecond)
		if !errors.Is(err, ErrNoLink) || !strings.Contains(err.Error(), "02:00:00:00:00:09") ||
			!strings.Contains(err.Error(), "nic0 02:00:00:00:00:01") || !strings.Contains(err.Error(), "lo ") {
			t.Errorf("unknown MAC: %v", err)
		}
		if d := time.Since(start); d < 50*time.Millisecond || d > 2*time.Second {
			t.Errorf("unknown MAC: gave up after %s", d)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The detach returns once the interface is gone, before the unbind does;
// the unbind's late result reaches done.
func TestUntilGoneReturnsWhenGone(t *testing.T) {
	release := make(chan struct{})
	var gone atomic.Bool
	late := make(chan error, 1)
	unbindErr := errors.New("late failure")
	unbind := func() error {
		gone.Store(true) // the kernel unlists the interface first...
		<-release        // ...and then waits for its references
		return unbindErr
	}
	returned := make(chan error, 1)
	go func() { returned <- untilGone(unbind, gone.Load, time.Millisecond, func(err error) { late <- err }) }()
	select {
	case err := <-returned:
		if err != nil {
			t.Fatalf("untilGone = %v, want nil once the interface is gone", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("untilGone waited for the unbind although the interface was gone")
	}
	close(release)
	select {
	case err := <-late:
		if err != unbindErr {
			t.Fatalf("done got %v, want the unbind's error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the unbind's result never reached done")
	}
}

// An unbind that fails before the interface goes is the detach's error.
func TestUntilGoneUnbindFails(t *testing.T) {
	want := errors.New("no driver")
	err := untilGone(func() error { return want }, func() bool { return false }, time.Millisecond, nil)
	if err != want {
		t.Fatalf("untilGone = %v, want %v", err, want)
	}
}
