package config

import (
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
