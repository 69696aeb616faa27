package policy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
)

// ErrNoNetwork is returned by NewNetwork for net.mode=none: the VM gets no
// NIC at all.
var ErrNoNetwork = errors.New("policy: net.mode=none: the guest has no network interface")

// DialFunc dials an upstream address ("tcp" or "udp", "IP:port"). The address
// is always an IP literal that policy has already checked; the runtime
// supplies a dialer that runs in the container's network namespace.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Resolver resolves host names for upstream connections. *net.Resolver
// satisfies it. It is only asked about names the policy already allows.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Secret is one io.gondolin.secret.NAME: the real value (kept on the host)
// and the hosts it may be sent to.
type Secret struct {
	Value string
	Hosts []HostPattern
}

// Config is what one guest's network needs. The policy fields are the
// user's Rules (see Rules.Config); the rest is supplied by the runtime.
type Config struct {
	// Container names the container (or sandbox) in audit records.
	Container string

	// Mode is policy (default when empty), open or none.
	Mode NetMode
	// DNS is synthetic (default when empty), trusted or open.
	DNS DNSMode
	// Allow lists the hosts HTTP and HTTPS requests may go to (mode
	// policy). An entry without a port covers ports 80 and 443; an entry
	// with a port covers that port only.
	Allow []HostPattern
	// AllowInternal and AllowInternalRanges name internal addresses that may
	// be reached; they lift the internal-range block but do not by
	// themselves allow egress.
	AllowInternal       []HostPattern
	AllowInternalRanges []netip.Prefix
	// TCPAllow lists host:port targets passed through as raw TCP.
	TCPAllow []HostPattern
	// Secrets maps an environment variable name to its real value and
	// allowed hosts. The guest only ever sees Network.Placeholder(name).
	Secrets map[string]Secret

	// CAStateDir holds the MITM CA (ca.key mode 0600, ca.crt). It is
	// created on first use and reused after. Required.
	CAStateDir string
	// AuditLog receives one JSON line per decision. Nil discards.
	AuditLog io.Writer
	// Logger receives diagnostics (secrets redacted). Nil discards.
	Logger *slog.Logger
	// Dialer dials upstream; nil uses a plain net.Dialer.
	Dialer DialFunc
	// Resolver resolves allowed upstream names; nil uses net.DefaultResolver.
	Resolver Resolver
	// DNSServers are the upstream resolvers for net.dns=trusted|open; when
	// empty they are read from /etc/resolv.conf.
	DNSServers []netip.AddrPort
	// RootCAs verify upstream TLS servers; nil uses the system roots.
	RootCAs *x509.CertPool
	// MTU of the guest NIC; 0 means 65000.
	MTU int

	// HostAddrs reports the host's own addresses that a dial could reach:
	// those of the network namespace upstream connections leave from and
	// of its routers, and the shim's own namespace's. Each counts as
	// internal in every mode, like loopback. Policy reads them at start
	// (an error there fails NewNetwork) and again at most every
	// hostAddrsTTL; a later error keeps the last set. Nil: no host
	// addresses beyond the internal ranges.
	HostAddrs func(ctx context.Context) ([]netip.Addr, error)
	// Limits bound what the guest can make the shim spend (the runtime
	// config's [limits]). A zero field takes its DefaultLimits value.
	Limits Limits
}

// The link is private to one VM, so it uses a large MTU: under TCG a guest
// moves three times the data with 65000 than with 1500 (fewer packets
// through the emulated stack). The VMM passes it to virtio-net as host_mtu,
// which the guest driver adopts.
const (
	defaultMTU  = 65000
	ethernetMTU = 1500
	minMTU      = 576
	maxMTU      = 65000
)

func (c *Config) setDefaults() error {
	if err := c.checkModes(); err != nil {
		return err
	}
	if c.CAStateDir == "" {
		return errors.New("policy: CAStateDir is required (the MITM CA lives there)")
	}
	if err := c.checkLists(); err != nil {
		return err
	}
	if c.AuditLog == nil {
		c.AuditLog = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Dialer == nil {
		d := &net.Dialer{}
		c.Dialer = d.DialContext
	}
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	if c.MTU == 0 {
		c.MTU = defaultMTU
	}
	c.Limits = limitsWithDefaults(c.Limits)
	if c.MTU < minMTU || c.MTU > maxMTU {
		return fmt.Errorf("policy: MTU %d out of range %d..%d", c.MTU, minMTU, maxMTU)
	}
	if c.DNS != DNSSynthetic && len(c.DNSServers) == 0 {
		servers, err := resolvConfServers("/etc/resolv.conf")
		if err != nil || len(servers) == 0 {
			return fmt.Errorf("policy: net.dns=%s needs upstream DNS servers and none were configured or found in /etc/resolv.conf (%v)", c.DNS, err)
		}
		c.DNSServers = servers
	}
	return nil
}

// checkModes defaults and checks net.mode and net.dns; net.mode=none is
// ErrNoNetwork.
func (c *Config) checkModes() error {
	if c.Mode == "" {
		c.Mode = NetModePolicy
	}
	if c.DNS == "" {
		c.DNS = DNSSynthetic
	}
	switch c.Mode {
	case NetModeNone:
		return ErrNoNetwork
	case NetModePolicy, NetModeOpen:
	default:
		return fmt.Errorf("policy: net.mode %q: accepted values are policy, open, none", c.Mode)
	}
	switch c.DNS {
	case DNSSynthetic, DNSTrusted, DNSOpen:
	default:
		return fmt.Errorf("policy: net.dns %q: accepted values are synthetic, trusted, open", c.DNS)
	}
	return nil
}

// checkLists checks the net.tcp-allow entries and the secrets.
func (c *Config) checkLists() error {
	for _, p := range c.TCPAllow {
		if p.Port == 0 || p.Wildcard {
			return fmt.Errorf("policy: net.tcp-allow entry %s must be host:port without wildcard", p)
		}
	}
	names := make([]string, 0, len(c.Secrets))
	for name := range c.Secrets {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s := c.Secrets[name]
		if s.Value == "" {
			return fmt.Errorf("policy: secret %s has no value (io.gondolin.secret.%s needs the environment variable %s set)", name, name, name)
		}
		if len(s.Hosts) == 0 {
			return fmt.Errorf("policy: secret %s has no allowed hosts", name)
		}
	}
	return nil
}

// limitsWithDefaults fills the zero (or negative) fields of l from
// DefaultLimits: a limit is never off.
func limitsWithDefaults(l Limits) Limits {
	d := DefaultLimits()
	pick := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	pick(&l.TCPFlows, d.TCPFlows)
	pick(&l.UDPFlows, d.UDPFlows)
	pick(&l.UpstreamConnections, d.UpstreamConnections)
	pick(&l.DNSInFlight, d.DNSInFlight)
	pick(&l.HTTPHeaderBytes, d.HTTPHeaderBytes)
	pick(&l.AuditLinesPerSecond, d.AuditLinesPerSecond)
	if l.HTTPHeaderTimeout <= 0 {
		l.HTTPHeaderTimeout = d.HTTPHeaderTimeout
	}
	return l
}

func resolvConfServers(path string) ([]netip.AddrPort, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []netip.AddrPort
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil {
				out = append(out, netip.AddrPortFrom(a.WithZone(""), 53))
			}
		}
	}
	return out, nil
}

// GuestConfig is what the guest agent configures on eth0, and what the VMM
// needs to create the NIC.
type GuestConfig struct {
	// Address is the guest's IPv4 address with its prefix (192.168.127.3/24).
	Address netip.Prefix
	// Gateway is the default route and the host side of the link.
	Gateway netip.Addr
	// DNS lists the resolvers for the guest's /etc/resolv.conf.
	DNS []netip.Addr
	// MTU of eth0.
	MTU int
	// MAC is the guest NIC's address (QEMU -device virtio-net-pci,mac=...).
	MAC net.HardwareAddr
	// GatewayMAC is the host side's link address (informational: the guest
	// learns it by ARP).
	GatewayMAC net.HardwareAddr
}
