package runtime

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The host addresses policy treats as internal are those of the dial
// namespace and of the shim's own, gateways included.
func TestHostAddrs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("creating network namespaces needs root; the unit tests run as root (make unit)")
	}
	spec := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}}}}
	ns, err := specNetNS(spec, filepath.Join(t.TempDir(), "netns"))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(netns.NsHandle(int(ns.f.Fd())), unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("93.184.215.7/24")
	if err := h.AddrAdd(lo, addr); err != nil {
		t.Fatal(err)
	}
	gw, _ := netlink.ParseAddr("93.184.215.1/32")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Gw: gw.IP}); err != nil {
		t.Fatal(err)
	}
	got, err := ns.hostAddrs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"93.184.215.7", "93.184.215.1", "127.0.0.1"} {
		if !slices.Contains(got, netip.MustParseAddr(want)) {
			t.Errorf("host addresses %v lack %s", got, want)
		}
	}
	host, err := (&netNS{}).hostAddrs(context.Background())
	if err != nil || !slices.Contains(host, netip.MustParseAddr("127.0.0.1")) || slices.Contains(host, netip.MustParseAddr("93.184.215.7")) {
		t.Errorf("the shim's own namespace: %v %v", host, err)
	}
}
