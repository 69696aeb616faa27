package netconfig

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	cfg, err := Parse("52:54:00:12:34:56", "192.168.127.3/24", "192.168.127.1", 1500, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MAC.String() != "52:54:00:12:34:56" || cfg.Address.String() != "192.168.127.3/24" ||
		cfg.Gateway.String() != "192.168.127.1" || cfg.MTU != 1500 {
		t.Fatalf("Parse = %+v", cfg)
	}
	if got := cfg.String(); got != "mac 52:54:00:12:34:56 address 192.168.127.3/24 gateway 192.168.127.1 mtu 1500" {
		t.Errorf("String = %q", got)
	}
	// Upper case MAC, MTU 0 (keep), /31 whose ends are usable.
	if _, err := Parse("52:54:00:AB:CD:EF", "10.0.0.0/31", "10.0.0.1", 0, nil); err != nil {
		t.Errorf("/31: %v", err)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	cases := []struct {
		mac, addr, gw string
		mtu           uint32
		want          string
	}{
		{"", "192.168.127.3/24", "192.168.127.1", 0, "mac is empty"},
		{"52:54:00:12:34", "192.168.127.3/24", "192.168.127.1", 0, `mac "52:54:00:12:34"`},
		{"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", "192.168.127.3/24", "192.168.127.1", 0, "not a 48-bit Ethernet address"},
		{"01:00:5e:00:00:01", "192.168.127.3/24", "192.168.127.1", 0, "multicast"},
		{"52:54:00:12:34:56", "", "192.168.127.1", 0, "address is empty"},
		{"52:54:00:12:34:56", "192.168.127.3", "192.168.127.1", 0, `address "192.168.127.3": want an IPv4 address with its prefix length`},
		{"52:54:00:12:34:56", "fd00::3/64", "192.168.127.1", 0, `address "fd00::3/64"`},
		{"52:54:00:12:34:56", "192.168.127.3/33", "192.168.127.1", 0, `address "192.168.127.3/33"`},
		{"52:54:00:12:34:56", "127.0.0.2/8", "127.0.0.1", 0, "cannot be an interface's address"},
		{"52:54:00:12:34:56", "192.168.127.0/24", "192.168.127.1", 0, "network address"},
		{"52:54:00:12:34:56", "192.168.127.255/24", "192.168.127.1", 0, "broadcast address"},
		{"52:54:00:12:34:56", "192.168.127.3/24", "", 0, "gateway is empty"},
		{"52:54:00:12:34:56", "192.168.127.3/24", "router", 0, `gateway "router": not an IPv4 address`},
		{"52:54:00:12:34:56", "192.168.127.3/24", "192.168.128.1", 0, "gateway 192.168.128.1: not in the subnet 192.168.127.0/24"},
		{"52:54:00:12:34:56", "192.168.127.3/24", "192.168.127.3", 0, "own address"},
		{"52:54:00:12:34:56", "192.168.127.3/32", "192.168.127.1", 0, "not in the subnet"},
		{"52:54:00:12:34:56", "192.168.127.3/24", "192.168.127.1", 67, "mtu 67"},
		{"52:54:00:12:34:56", "192.168.127.3/24", "192.168.127.1", 65536, "mtu 65536"},
	}
	for _, c := range cases {
		_, err := Parse(c.mac, c.addr, c.gw, c.mtu, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q, %q, %q, %d) = %v, want an error with %q", c.mac, c.addr, c.gw, c.mtu, err, c.want)
		}
	}
}

func TestParseExtra(t *testing.T) {
	cfg, err := Parse("52:54:00:12:34:56", "172.17.0.2/16", "172.17.0.1", 0, []string{"172.18.0.5/16"})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(cfg.Addresses()); got != "[172.17.0.2/16 172.18.0.5/16]" {
		t.Errorf("Addresses = %s", got)
	}
	if !strings.Contains(cfg.String(), "extra [172.18.0.5/16]") {
		t.Errorf("String = %q", cfg.String())
	}
	for _, c := range []struct {
		extra []string
		want  string
	}{
		{[]string{"172.18.0.5"}, `extra address "172.18.0.5": want an IPv4 address with its prefix length`},
		{[]string{"172.17.0.2/16"}, "given twice"},
		{[]string{"172.17.0.1/16"}, "given twice (or is the gateway)"},
		{[]string{"10.0.0.1/8", "10.0.0.1/8"}, "given twice"},
		{[]string{"10.255.255.255/8"}, "broadcast"},
	} {
		_, err := Parse("52:54:00:12:34:56", "172.17.0.2/16", "172.17.0.1", 0, c.extra)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("extra %v: %v, want an error with %q", c.extra, err, c.want)
		}
	}
}

// The host sends the namespace's configuration again whenever it changes:
// a repeat is a no-op, a change is applied, a failure is retried.
func TestConfiguratorFollowsChanges(t *testing.T) {
	calls := 0
	fail := errors.New("boom")
	var next error
	var last Config
	c := &Configurator{Apply: func(cfg Config) error { calls++; last = cfg; return next }}
	a, _ := Parse("52:54:00:12:34:56", "192.168.127.3/24", "192.168.127.1", 1500, nil)
	b, _ := Parse("52:54:00:12:34:56", "192.168.127.3/24", "192.168.127.1", 1500, []string{"10.1.0.2/16"})

	next = fail
	if err := c.Configure(a); !errors.Is(err, fail) {
		t.Fatalf("failing apply: %v", err)
	}
	next = nil
	if err := c.Configure(a); err != nil || calls != 2 {
		t.Fatalf("retry after failure: %v (calls %d)", err, calls)
	}
	if err := c.Configure(a); err != nil || calls != 2 {
		t.Fatalf("repeat: %v (calls %d)", err, calls)
	}
	if err := c.Configure(b); err != nil || calls != 3 || !last.Equal(b) {
		t.Fatalf("change: %v (calls %d)", err, calls)
	}
	// After a failed change, the old config is applied again for real.
	next = fail
	if err := c.Configure(a); !errors.Is(err, fail) {
		t.Fatalf("failing change: %v", err)
	}
	next = nil
	if err := c.Configure(b); err != nil || calls != 5 {
		t.Fatalf("b after a failed change: %v (calls %d)", err, calls)
	}
}
