package policy

import (
	"net/netip"
	"strings"

	"github.com/earendil-works/gondolin-containerd/oci"
)

// normalizeHost lower-cases a host name and drops a trailing dot. It reports
// false for anything that is neither an IP literal nor a plausible DNS name
// (so "evil.com@allowed.com" or an empty name never reaches a match).
func normalizeHost(h string) (string, bool) {
	h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		if ip.Zone() != "" {
			return "", false
		}
		return ip.Unmap().String(), true
	}
	if h == "" || len(h) > 253 {
		return "", false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", false
			}
		}
	}
	return h, true
}

// matchHost reports whether the normalized host matches the pattern's host
// part: an exact name, "*.domain" (subdomains only, never the domain itself)
// or an IP literal.
func matchHost(p oci.HostPattern, host string) bool {
	if p.IP.IsValid() {
		ip, err := netip.ParseAddr(host)
		return err == nil && ip.Unmap() == p.IP.Unmap()
	}
	if p.Host == "" {
		return false
	}
	if p.Wildcard {
		return len(host) > len(p.Host)+1 && strings.HasSuffix(host, "."+p.Host)
	}
	return host == p.Host
}

// matchPattern also checks the port: a pattern without a port matches any
// (allow-internal and secret hosts; net.allow uses allowMatch).
func matchPattern(p oci.HostPattern, host string, port uint16) bool {
	return (p.Port == 0 || p.Port == port) && matchHost(p, host)
}

func matchAny(ps []oci.HostPattern, host string, port uint16) bool {
	for _, p := range ps {
		if matchPattern(p, host, port) {
			return true
		}
	}
	return false
}

// webPort reports whether port is one a net.allow entry without a port
// covers: 80 (HTTP) and 443 (HTTPS).
func webPort(port uint16) bool { return port == 80 || port == 443 }

// allowMatch is the net.allow check: the host matches an entry and the port
// is the entry's port, or 80/443 for an entry without one.
func allowMatch(ps []oci.HostPattern, host string, port uint16) bool {
	for _, p := range ps {
		if (p.Port == port || p.Port == 0 && webPort(port)) && matchHost(p, host) {
			return true
		}
	}
	return false
}

func matchAnyHost(ps []oci.HostPattern, host string) bool {
	for _, p := range ps {
		if matchHost(p, host) {
			return true
		}
	}
	return false
}

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// internalRanges are refused on every resolved address unless
// net.allow-internal names them: "this" network, private, CGNAT, loopback,
// link-local (which holds cloud metadata 169.254.169.254), IETF protocol
// assignments, the benchmark range (which also holds the synthetic DNS pool),
// multicast, reserved and broadcast; for IPv6 unspecified, loopback,
// IPv4-compatible, discard, unique-local (fd00:ec2::254 metadata),
// link-local, site-local and multicast. IPv4-mapped, NAT64 and 6to4 forms
// are unwrapped and their IPv4 address checked.
var internalRanges = mustPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15",
	"224.0.0.0/4", "240.0.0.0/4",
	"::/128", "::1/128", "::/96", "100::/64", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)

var (
	nat64Prefix   = netip.MustParsePrefix("64:ff9b::/96")
	nat64Local    = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFourPref = netip.MustParsePrefix("2002::/16")
)

// embeddedIPv4 returns the IPv4 address an IPv6 address stands for, if any.
func embeddedIPv4(a netip.Addr) (netip.Addr, bool) {
	if a.Is4In6() {
		return a.Unmap(), true
	}
	if !a.Is6() {
		return netip.Addr{}, false
	}
	b := a.As16()
	switch {
	case nat64Prefix.Contains(a), nat64Local.Contains(a):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}), true
	case sixToFourPref.Contains(a):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), true
	}
	return netip.Addr{}, false
}

// isInternal reports whether a is an address the guest may not reach unless
// it is named by net.allow-internal.
func isInternal(a netip.Addr) bool {
	if !a.IsValid() {
		return true
	}
	a = a.WithZone("")
	if v4, ok := embeddedIPv4(a); ok {
		if isInternal(v4) {
			return true
		}
		if a.Is4In6() {
			return false
		}
	}
	for _, p := range internalRanges {
		if p.Contains(a) {
			return true
		}
	}
	return a == netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// internalAllowed reports whether the internal address a, reached as host
// on port, is named by net.allow-internal (as a CIDR, an IP literal or a
// host name pattern).
func (c *Config) internalAllowed(host string, a netip.Addr, port uint16) bool {
	cands := []netip.Addr{a.WithZone("")}
	if v4, ok := embeddedIPv4(a); ok {
		cands = append(cands, v4)
	}
	for _, ip := range cands {
		for _, r := range c.AllowInternalRanges {
			if r.Contains(ip) {
				return true
			}
		}
		for _, p := range c.AllowInternal {
			if p.IP.IsValid() && p.IP.Unmap() == ip.Unmap() && (p.Port == 0 || p.Port == port) {
				return true
			}
		}
	}
	if host != "" {
		for _, p := range c.AllowInternal {
			if !p.IP.IsValid() && matchPattern(p, host, port) {
				return true
			}
		}
	}
	return false
}

// addrBlocked is the internal-range check applied to every address before
// it is dialled.
func (c *Config) addrBlocked(host string, a netip.Addr, port uint16) bool {
	return isInternal(a) && !c.internalAllowed(host, a, port)
}
