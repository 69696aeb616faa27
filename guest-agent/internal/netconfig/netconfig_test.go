package netconfig

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	cfg, err := Parse("52:54:00:12:34:56", "192.168.127.3/24", "192.168.127.1", 1500)
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
	if _, err := Parse("52:54:00:AB:CD:EF", "10.0.0.0/31", "10.0.0.1", 0); err != nil {
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
		_, err := Parse(c.mac, c.addr, c.gw, c.mtu)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q, %q, %q, %d) = %v, want an error with %q", c.mac, c.addr, c.gw, c.mtu, err, c.want)
		}
	}
}

func TestConfiguratorOnce(t *testing.T) {
	calls := 0
	fail := errors.New("boom")
	var next error
	c := &Configurator{Apply: func(Config) error { calls++; return next }}
	a, _ := Parse("52:54:00:12:34:56", "192.168.127.3/24", "192.168.127.1", 1500)
	b, _ := Parse("52:54:00:12:34:56", "192.168.127.4/24", "192.168.127.1", 1500)

	next = fail
	if err := c.Configure(a); !errors.Is(err, fail) {
		t.Fatalf("failing apply: %v", err)
	}
	next = nil
	if err := c.Configure(a); err != nil || calls != 2 {
		t.Fatalf("retry after failure: %v (calls %d)", err, calls)
	}
	// The same request again: nothing to do.
	if err := c.Configure(a); err != nil || calls != 2 {
		t.Fatalf("repeat: %v (calls %d)", err, calls)
	}
	err := c.Configure(b)
	if !errors.Is(err, ErrConfigured) || !strings.Contains(err.Error(), "192.168.127.3/24") || !strings.Contains(err.Error(), "192.168.127.4/24") || calls != 2 {
		t.Fatalf("different request: %v (calls %d)", err, calls)
	}
}
