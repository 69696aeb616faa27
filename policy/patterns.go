package policy

import (
	"net/netip"
	"strings"
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
func matchHost(p HostPattern, host string) bool {
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
func matchPattern(p HostPattern, host string, port uint16) bool {
	return (p.Port == 0 || p.Port == port) && matchHost(p, host)
}

func matchAny(ps []HostPattern, host string, port uint16) bool {
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
func allowMatch(ps []HostPattern, host string, port uint16) bool {
	for _, p := range ps {
		if (p.Port == port || p.Port == 0 && webPort(port)) && matchHost(p, host) {
			return true
		}
	}
	return false
}

func matchAnyHost(ps []HostPattern, host string) bool {
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

// internalRanges are refused on every address before it is dialled unless
// net.allow-internal names them. They are every range the IANA IPv4 and
// IPv6 Special-Purpose Address Registries mark not globally reachable
// (testdata/iana-special-purpose.csv transcribes both; a property test
// holds this list to it), taken whole: an entry marked globally reachable
// inside such a range (192.0.0.9/32 PCP anycast inside 192.0.0.0/24,
// 2001:1::1/128 inside 2001::/23) stays internal, since none of them is
// a web destination. Added to them: multicast, the deprecated 6to4 relay
// anycast range, and all IPv6 outside global unicast 2000::/3, which
// covers IPv4-compatible, IPv4-translated (::ffff:0:0:0/96), discard,
// dummy, unique-local (fd00:ec2::254 metadata), link-local, site-local,
// SRv6 SIDs and multicast. 64:ff9b::/96 (NAT64, globally reachable) and
// 2002::/16 (6to4, "N/A" in the registry) are judged by the IPv4 address
// they embed, as is ::ffff:0:0/96, which dials its IPv4 address.
var internalRanges = mustPrefixes(
	// IPv4 Special-Purpose Address Registry, Globally Reachable = False.
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
	"198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "255.255.255.255/32",
	// Multicast; 6to4 relay anycast (deprecated by RFC 7526).
	"224.0.0.0/4", "192.88.99.0/24",
	// IPv6 Special-Purpose Address Registry, Globally Reachable = False,
	// inside global unicast: IETF protocol assignments (holding Teredo
	// 2001::/32, benchmarking, ORCHID), documentation (both).
	"2001::/23", "2001:db8::/32", "3fff::/20",
)

var (
	globalUnicast = netip.MustParsePrefix("2000::/3")
	// nat64Prefix is the well-known NAT64 prefix (RFC 6052), globally
	// reachable: it stands for the IPv4 address in its last 32 bits.
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	// nat64Local is the local-use NAT64 prefix (RFC 8215), not globally
	// reachable. As a /48 it embeds the IPv4 address around the "u"
	// octet (bits 64-71, RFC 6052 section 2.2): bits 48-63 and 72-87.
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")
	// ipv4Translated is the SIIT form ::ffff:0:a.b.c.d (RFC 2765).
	ipv4Translated = netip.MustParsePrefix("::ffff:0:0:0/96")
	ipv4Compatible = netip.MustParsePrefix("::/96")
	sixToFourPref  = netip.MustParsePrefix("2002::/16")
	// teredoPrefix (RFC 4380): the server's IPv4 in bits 32-63, the
	// client's in the last 32 bits with every bit inverted.
	teredoPrefix = netip.MustParsePrefix("2001::/32")
)

// embeddedIPv4s returns every IPv4 address an IPv6 address carries, by the
// rules of each form that carries one. translation is true for the forms
// that stand for exactly that IPv4 host (mapped, translated, NAT64), so a
// net.allow-internal entry for the IPv4 address covers them.
func embeddedIPv4s(a netip.Addr) (v4s []netip.Addr, translation bool) {
	if !a.Is6() {
		return nil, false
	}
	b := a.WithZone("").As16()
	v4 := func(i, j, k, l int) netip.Addr { return netip.AddrFrom4([4]byte{b[i], b[j], b[k], b[l]}) }
	switch {
	case a.Is4In6():
		return []netip.Addr{a.Unmap()}, true
	case ipv4Translated.Contains(a), nat64Prefix.Contains(a):
		return []netip.Addr{v4(12, 13, 14, 15)}, true
	case nat64Local.Contains(a):
		return []netip.Addr{v4(6, 7, 9, 10)}, true
	case ipv4Compatible.Contains(a):
		return []netip.Addr{v4(12, 13, 14, 15)}, false
	case sixToFourPref.Contains(a):
		return []netip.Addr{v4(2, 3, 4, 5)}, false
	case teredoPrefix.Contains(a):
		client := netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})
		return []netip.Addr{v4(4, 5, 6, 7), client}, false
	}
	return nil, false
}

// isInternal reports whether a lies in a range the guest may not reach
// unless net.allow-internal names it. It does not know the host's own
// addresses: Config.isInternal adds them.
func isInternal(a netip.Addr) bool {
	if !a.IsValid() {
		return true
	}
	a = a.WithZone("")
	v4s, _ := embeddedIPv4s(a)
	for _, v4 := range v4s {
		if isInternal(v4) {
			return true
		}
	}
	if a.Is4In6() {
		return false // it is its IPv4 address, checked above
	}
	if a.Is6() && !globalUnicast.Contains(a) && !nat64Prefix.Contains(a) {
		return true
	}
	for _, p := range internalRanges {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// isInternal is the package's isInternal plus the host's own addresses,
// bare or embedded in an IPv6 address.
func (p *Policy) isInternal(a netip.Addr) bool {
	if isInternal(a) {
		return true
	}
	if p.hostAddrs == nil {
		return false
	}
	a = a.WithZone("")
	if p.hostAddrs.has(a.Unmap()) {
		return true
	}
	v4s, _ := embeddedIPv4s(a)
	for _, v4 := range v4s {
		if p.hostAddrs.has(v4) {
			return true
		}
	}
	return false
}

// internalAllowed reports whether the internal address a, reached as host
// on port, is named by net.allow-internal (as a CIDR, an IP literal or a
// host name pattern).
func (p *Policy) internalAllowed(host string, a netip.Addr, port uint16) bool {
	cands := []netip.Addr{a.WithZone("")}
	if v4s, translation := embeddedIPv4s(a); translation {
		cands = append(cands, v4s...)
	}
	for _, ip := range cands {
		for _, r := range p.allowInternalRanges {
			if r.Contains(ip) {
				return true
			}
		}
		for _, e := range p.allowInternal {
			if e.IP.IsValid() && e.IP.Unmap() == ip.Unmap() && (e.Port == 0 || e.Port == port) {
				return true
			}
		}
	}
	if host != "" {
		for _, e := range p.allowInternal {
			if !e.IP.IsValid() && matchPattern(e, host, port) {
				return true
			}
		}
	}
	return false
}

// addrBlocked is the internal-range check applied to every address before
// it is dialled.
func (p *Policy) addrBlocked(host string, a netip.Addr, port uint16) bool {
	return p.isInternal(a) && !p.internalAllowed(host, a, port)
}
