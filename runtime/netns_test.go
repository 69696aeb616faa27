package runtime

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/log"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// A spec asking for a new network namespace without a path gets a fresh,
// pinned one: empty (only lo), no way out, and gone after Close.
func TestSpecNetNSCreatesEmptyNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("creating network namespaces needs root; the unit tests run as root (make unit)")
	}
	pin := filepath.Join(t.TempDir(), "netns")
	spec := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}}}}
	ns, err := specNetNS(spec, pin)
	if err != nil {
		t.Fatal(err)
	}
	if ns.Path() != pin {
		t.Fatalf("namespace path %q, want the pin %q", ns.Path(), pin)
	}
	l, err := ns.link()
	if err != nil || !l.empty {
		t.Fatalf("a fresh namespace should be empty: %+v %v", l, err)
	}
	if l.ok {
		t.Fatalf("a fresh namespace has no default route: %+v", l)
	}
	if _, err := ns.dial(context.Background(), "tcp", "192.0.2.1:80"); err == nil {
		t.Fatal("dialling out of an empty namespace must fail")
	}
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pin); !os.IsNotExist(err) {
		t.Fatalf("pin left after Close: %v", err)
	}

	// No network namespace in the spec: the host's, never empty.
	host, err := specNetNS(&specs.Spec{Linux: &specs.Linux{}}, pin)
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := host.link(); l.empty || host.Path() != "" {
		t.Fatal("the host's namespace is not empty and has no path")
	}
}

// A namespace configured as Docker does (an interface with 172.17.0.2/16
// and a default route via 172.17.0.1) is read back for the guest.
func TestNetNSLinkReadsDefaultRoute(t *testing.T) {
	pin := filepath.Join(t.TempDir(), "netns")
	ns, err := createNetNS(pin)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(netns.NsHandle(int(ns.f.Fd())), unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	link := addVeth(t, h, "eth0", "172.17.0.2/16")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP("172.17.0.1")}); err != nil {
		t.Fatal(err)
	}
	l, err := ns.link()
	if err != nil {
		t.Fatal(err)
	}
	if l.empty || !l.ok || l.addr.String() != "172.17.0.2/16" || l.gateway.String() != "172.17.0.1" {
		t.Fatalf("link() = %+v", l)
	}

	// docker network connect: a second interface appears; the watch
	// reports it and the reading carries its address as an extra.
	watch, err := ns.watch(log.L.WithField("test", t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	link1 := addVeth(t, h, "eth1", "172.18.0.5/16")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !watch.changed(ctx) {
		t.Fatal("no change reported after an interface was added")
	}
	l2, err := ns.link()
	if err != nil {
		t.Fatal(err)
	}
	if !l2.ok || l2.addr != l.addr || fmt.Sprint(l2.extra) != "[172.18.0.5/16]" || l2.equal(l) {
		t.Fatalf("after connect: link() = %+v", l2)
	}

	// The default route moves to the second interface (the first network
	// was disconnected): the primary address follows it.
	if err := h.RouteDel(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP("172.17.0.1")}); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: link1.Attrs().Index, Gw: net.ParseIP("172.18.0.1")}); err != nil {
		t.Fatal(err)
	}
	if !watch.changed(ctx) {
		t.Fatal("no change reported after the default route moved")
	}
	l3, err := ns.link()
	if err != nil {
		t.Fatal(err)
	}
	if l3.addr.String() != "172.18.0.5/16" || l3.gateway.String() != "172.18.0.1" || fmt.Sprint(l3.extra) != "[172.17.0.2/16]" {
		t.Fatalf("after the route moved: link() = %+v", l3)
	}
}

// addVeth adds a veth pair through h, gives name the address cidr and
// brings it up.
func addVeth(t *testing.T, h *netlink.Handle, name, cidr string) netlink.Link {
	t.Helper()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "peer-" + name}); err != nil {
		t.Fatal(err)
	}
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(link, addr); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	return link
}
