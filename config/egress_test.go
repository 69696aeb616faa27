package config

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/earendil-works/gondolin-containerd/policy"
)

// The config adds its limits, DNS servers and upstream_hosts to a
// container's rules, without changing the rules.
func TestEgress(t *testing.T) {
	cfg := Default("/b")
	if err := parseConfig(cfg, "upstream_dns = [\"10.0.0.2\"]\n[limits]\ntcp_flows = 7\n[upstream_hosts]\n\"API.x.test.\" = [\"127.0.0.1\"]\n"); err != nil {
		t.Fatal(err)
	}
	rules := policy.DefaultRules()
	if err := rules.Set(policy.KeyAllowInternal, "10.1.1.1"); err != nil {
		t.Fatal(err)
	}
	e, err := cfg.Egress(rules, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.Config.Limits.TCPFlows != 7 || len(e.Config.DNSServers) != 1 || e.Config.DNSServers[0] != netip.MustParseAddrPort("10.0.0.2:53") {
		t.Errorf("limits/DNS: %+v %v", e.Config.Limits, e.Config.DNSServers)
	}
	if got := e.Overrides["api.x.test"]; len(got) != 1 || got[0] != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("overrides = %v", e.Overrides)
	}
	if len(e.Config.AllowInternal) != 2 || e.Config.AllowInternal[1].Host != "api.x.test" || len(rules.AllowInternal) != 1 {
		t.Errorf("allow internal = %v (rules: %v)", e.Config.AllowInternal, rules.AllowInternal)
	}
}

type fixedResolver []netip.Addr

func (f fixedResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return f, nil
}

// A pinned name is answered from the pins (any case, trailing dot), any
// other by Next; DNS questions go to the servers in turn over the dial.
func TestResolvers(t *testing.T) {
	pinned := netip.MustParseAddr("127.0.0.1")
	other := netip.MustParseAddr("93.184.215.14")
	r := PinnedResolver{Pins: map[string][]netip.Addr{"api.x.test": {pinned}}, Next: fixedResolver{other}}
	if got, _ := r.LookupNetIP(context.Background(), "ip", "API.x.test."); len(got) != 1 || got[0] != pinned {
		t.Errorf("pinned: %v", got)
	}
	if got, _ := r.LookupNetIP(context.Background(), "ip", "b.x.test"); len(got) != 1 || got[0] != other {
		t.Errorf("other: %v", got)
	}
	servers := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.2:53"), netip.MustParseAddrPort("10.0.0.3:5353")}
	var dialled []string
	res := DNSResolver(servers, func(_ context.Context, _, address string) (net.Conn, error) {
		dialled = append(dialled, address)
		return nil, errors.New("no network in this test")
	})
	for i := 0; i < 2; i++ {
		res.Dial(context.Background(), "udp", "127.0.0.53:53")
	}
	if len(dialled) != 2 || dialled[0] != "10.0.0.2:53" || dialled[1] != "10.0.0.3:5353" {
		t.Errorf("dialled %v, want the servers in turn", dialled)
	}
}
