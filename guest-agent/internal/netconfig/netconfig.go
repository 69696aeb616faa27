// Package netconfig gives the guest its network as the host asks in
// ConfigureNetwork: the NIC, found by its MAC (the guest kernel picks its
// name), gets its MTU, its static IPv4 addresses and the default route, and
// lo is brought up. A later request replaces the earlier one: the host
// mirrors the container's network namespace, which Docker may change while
// the container runs (docker network connect/disconnect). It works in the network namespace of the calling thread:
// the guest's root namespace, which the container processes share.
package netconfig

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/containerd/errdefs"
)

// Config is a validated ConfigureNetwork request.
type Config struct {
	MAC net.HardwareAddr
	// Address is the interface's address with its prefix length; the
	// address is kept (not masked to the subnet).
	Address netip.Prefix
	Gateway netip.Addr
	// Extra are further addresses of the NIC (the namespace's other
	// interfaces), with their prefix lengths.
	Extra []netip.Prefix
	// MTU 0 keeps the link's MTU.
	MTU int
}

// IPv4 cannot work below 68 (RFC 791); 65535 is the largest IPv4 packet.
const (
	minMTU = 68
	maxMTU = 65535
)

// Parse validates the request's fields, naming the one that is wrong.
func Parse(mac, address, gateway string, mtu uint32, extra []string) (Config, error) {
	var cfg Config
	var err error
	if cfg.MAC, err = parseMAC(mac); err != nil {
		return Config{}, err
	}
	if cfg.Address, err = parseAddress(address); err != nil {
		return Config{}, err
	}
	if cfg.Gateway, err = parseGateway(gateway, cfg.Address); err != nil {
		return Config{}, err
	}
	if mtu != 0 && (mtu < minMTU || mtu > maxMTU) {
		return Config{}, fmt.Errorf("mtu %d: must be between %d and %d (or 0 to keep the link's)", mtu, minMTU, maxMTU)
	}
	cfg.MTU = int(mtu)
	seen := map[netip.Addr]bool{cfg.Address.Addr(): true, cfg.Gateway: true}
	for _, e := range extra {
		p, err := parseAddress(e)
		if err != nil {
			return Config{}, fmt.Errorf("extra %w", err)
		}
		if seen[p.Addr()] {
			return Config{}, fmt.Errorf("extra address %q: %s is given twice (or is the gateway)", e, p.Addr())
		}
		seen[p.Addr()] = true
		cfg.Extra = append(cfg.Extra, p)
	}
	return cfg, nil
}

func parseMAC(s string) (net.HardwareAddr, error) {
	if s == "" {
		return nil, errors.New("mac is empty")
	}
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("mac %q: %w", s, err)
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("mac %q: not a 48-bit Ethernet address", s)
	}
	if mac[0]&1 != 0 {
		return nil, fmt.Errorf("mac %q: a multicast address cannot name a NIC", s)
	}
	return mac, nil
}

func parseAddress(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errors.New("address is empty")
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("address %q: want an IPv4 address with its prefix length, like 192.168.127.3/24", s)
	}
	a := p.Addr()
	if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Prefix{}, fmt.Errorf("address %q: %s cannot be an interface's address", s, a)
	}
	// Below /31 the first and last addresses name the subnet and its
	// broadcast (RFC 3021 makes /31 and /32 the exceptions).
	if p.Bits() < 31 {
		if a == p.Masked().Addr() {
			return netip.Prefix{}, fmt.Errorf("address %q: %s is the subnet's network address", s, a)
		}
		if a == broadcast(p) {
			return netip.Prefix{}, fmt.Errorf("address %q: %s is the subnet's broadcast address", s, a)
		}
	}
	return p, nil
}

// broadcast returns the last address of an IPv4 prefix.
func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	for i := 0; i < 4; i++ {
		b[i] |= byte(host >> (24 - 8*i))
	}
	return netip.AddrFrom4(b)
}

// parseGateway wants the next hop on the interface's own subnet: the
// default route goes through it without a route to it first.
func parseGateway(s string, address netip.Prefix) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, errors.New("gateway is empty")
	}
	gw, err := netip.ParseAddr(s)
	if err != nil || !gw.Is4() {
		return netip.Addr{}, fmt.Errorf("gateway %q: not an IPv4 address", s)
	}
	if gw == address.Addr() {
		return netip.Addr{}, fmt.Errorf("gateway %s: it is the interface's own address", gw)
	}
	if !address.Masked().Contains(gw) {
		return netip.Addr{}, fmt.Errorf("gateway %s: not in the subnet %s of address %s", gw, address.Masked(), address)
	}
	return gw, nil
}

// Equal reports whether two configs ask for the same network.
func (c Config) Equal(o Config) bool {
	return c.MAC.String() == o.MAC.String() && c.Address == o.Address && c.Gateway == o.Gateway && c.MTU == o.MTU &&
		slices.Equal(c.Extra, o.Extra)
}

// Addresses is every address the NIC carries, the primary one first.
func (c Config) Addresses() []netip.Prefix {
	return append([]netip.Prefix{c.Address}, c.Extra...)
}

func (c Config) String() string {
	mtu := "default"
	if c.MTU != 0 {
		mtu = fmt.Sprint(c.MTU)
	}
	s := fmt.Sprintf("mac %s address %s gateway %s mtu %s", c.MAC, c.Address, c.Gateway, mtu)
	if len(c.Extra) > 0 {
		s += fmt.Sprintf(" extra %v", c.Extra)
	}
	return s
}

// ErrNoLink: no interface has the requested MAC. Its kind is not found.
var ErrNoLink = errdefs.ErrNotFound.WithMessage("no network interface with that MAC")

// Configurator applies the host's requests one at a time. A repeat of the
// applied request (a retried call) does nothing; a different one is
// applied over it, and the replace-style netlink calls make re-applying
// harmless after a partial failure.
type Configurator struct {
	// Apply configures the network; nil means ApplyRoot.
	Apply func(Config) error

	mu      sync.Mutex
	applied *Config
}

// Configure applies cfg unless it is what was applied last.
func (c *Configurator) Configure(cfg Config) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.applied != nil && c.applied.Equal(cfg) {
		return nil
	}
	apply := c.Apply
	if apply == nil {
		apply = ApplyRoot
	}
	// Whatever happens, the link is no longer known to match what was
	// applied before.
	c.applied = nil
	if err := apply(cfg); err != nil {
		return err
	}
	c.applied = &cfg
	return nil
}
