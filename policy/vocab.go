package policy

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// The policy's vocabulary: the modes, the host patterns its lists hold and
// how they are written. Whoever reads a policy from the user (container
// annotations, the runtime config) parses it with these, so a list means
// the same wherever it is written.

// The keys a user writes the policy under (the io.gondolin.net.* and
// io.gondolin.secret.* annotations, DESIGN.md "Contracts"): denials and
// hints name them.
const (
	KeyMode          = "io.gondolin.net.mode"
	KeyAllow         = "io.gondolin.net.allow"
	KeyAllowInternal = "io.gondolin.net.allow-internal"
	KeyDNS           = "io.gondolin.net.dns"
	KeyTCPAllow      = "io.gondolin.net.tcp-allow"
	KeySecretPrefix  = "io.gondolin.secret."
)

// HostName is the name the guest reaches the host by: the shim dials it as
// the loopback (127.0.0.1) of the network namespace the container's
// traffic leaves from, which under --net-host is the host's. The guest
// also reaches it without DNS at the link's gateway address. Like any
// internal address it needs net.allow-internal (127.0.0.1 or this name),
// and like any host net.allow (HTTP/TLS) or net.tcp-allow (raw TCP) in
// mode policy.
const HostName = "host.gondolin.internal"

// hostLoopback is what HostName is dialled at.
var hostLoopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// NetMode is io.gondolin.net.mode.
type NetMode string

const (
	NetModePolicy NetMode = "policy"
	NetModeOpen   NetMode = "open"
	NetModeNone   NetMode = "none"
)

// DNSMode is io.gondolin.net.dns.
type DNSMode string

const (
	DNSSynthetic DNSMode = "synthetic"
	DNSTrusted   DNSMode = "trusted"
	DNSOpen      DNSMode = "open"
)

// HostPattern is one entry of an allow list: an exact host name, a
// "*.domain" wildcard matching subdomains only, or an IP literal, with an
// optional port (0 = any).
type HostPattern struct {
	Host     string
	Wildcard bool
	IP       netip.Addr
	Port     uint16
	// Scheme is set on secret hosts only: "https" (the default) or
	// "http" (the annotation named http:// explicitly). A secret host
	// without a port is bound to the scheme's default port, 443 or 80.
	Scheme string
}

// DefaultPort is the port a secret host without one is bound to: 80 for
// http, 443 otherwise.
func (p HostPattern) DefaultPort() uint16 {
	if p.Port != 0 {
		return p.Port
	}
	if p.Scheme == SchemeHTTP {
		return 80
	}
	return 443
}

// Schemes a secret host may name.
const (
	SchemeHTTP  = "http"
	SchemeHTTPS = "https"
)

func (p HostPattern) String() string {
	h := p.hostString()
	if p.Scheme != "" {
		return p.Scheme + "://" + h
	}
	return h
}

func (p HostPattern) hostString() string {
	h := p.Host
	if p.Wildcard {
		h = "*." + h
	}
	if p.IP.IsValid() {
		h = p.IP.String()
		if p.IP.Is6() && p.Port != 0 {
			h = "[" + h + "]"
		}
	}
	if p.Port != 0 {
		h += ":" + strconv.Itoa(int(p.Port))
	}
	return h
}

// ParseNetMode checks a net.mode value.
func ParseNetMode(v string) (NetMode, error) {
	switch m := NetMode(v); m {
	case NetModePolicy, NetModeOpen, NetModeNone:
		return m, nil
	}
	return "", fmt.Errorf("%q is not a network mode: accepted are policy, open, none", v)
}

// ParseDNSMode checks a net.dns value.
func ParseDNSMode(v string) (DNSMode, error) {
	switch m := DNSMode(v); m {
	case DNSSynthetic, DNSTrusted, DNSOpen:
		return m, nil
	}
	return "", fmt.Errorf("%q is not a DNS mode: accepted are synthetic, trusted, open", v)
}

var hostLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ParseHostList reads a comma list of host patterns (net.allow; with
// portRequired, net.tcp-allow: host:port without wildcards).
func ParseHostList(value string, portRequired bool) ([]HostPattern, error) {
	var out []HostPattern
	for _, item := range strings.Split(value, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		p, err := parseHostPattern(item)
		if err != nil {
			return nil, err
		}
		if portRequired && p.Port == 0 {
			return nil, fmt.Errorf("%q has no port", item)
		}
		if portRequired && p.Wildcard {
			return nil, fmt.Errorf("%q: wildcards are not accepted here", item)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the list is empty")
	}
	return out, nil
}

// ParseSecretHosts reads the hosts of io.gondolin.secret.NAME: each is
// [scheme://]host[:port]. Without a scheme a secret is bound to HTTPS: the
// value only ever travels inside TLS the host verified, and only to the
// named port (443 when none is given). http:// binds it to plain HTTP
// (port 80 by default) and must be asked for explicitly.
func ParseSecretHosts(value string) ([]HostPattern, error) {
	var out []HostPattern
	for _, item := range strings.Split(value, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		scheme := SchemeHTTPS
		rest := item
		if i := strings.Index(item, "://"); i >= 0 {
			switch strings.ToLower(item[:i]) {
			case SchemeHTTP:
				scheme = SchemeHTTP
			case SchemeHTTPS:
			default:
				return nil, fmt.Errorf("%q: scheme %q is not http or https", item, item[:i])
			}
			rest = item[i+3:]
		}
		if rest == "" || strings.ContainsAny(rest, "/?#@") || strings.Contains(rest, "://") {
			return nil, fmt.Errorf("%q: want [http://|https://]host[:port], without a path, query or user", item)
		}
		p, err := parseHostPattern(rest)
		if err != nil {
			return nil, err
		}
		p.Scheme = scheme
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the list is empty")
	}
	return out, nil
}

func parseHostPattern(item string) (HostPattern, error) {
	var p HostPattern
	host, port := item, ""
	if strings.HasPrefix(item, "[") {
		end := strings.Index(item, "]")
		if end < 0 {
			return p, fmt.Errorf("%q: unclosed [", item)
		}
		host, port = item[1:end], strings.TrimPrefix(item[end+1:], ":")
		if item[end+1:] != "" && !strings.HasPrefix(item[end+1:], ":") {
			return p, fmt.Errorf("%q: expected :port after ]", item)
		}
	} else if strings.Count(item, ":") == 1 {
		host, port, _ = strings.Cut(item, ":")
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return p, fmt.Errorf("%q: port %q is not a number from 1 to 65535", item, port)
		}
		p.Port = uint16(n)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			// A zone names an interface of the host, never a destination
			// policy could match.
			return p, fmt.Errorf("%q: an IP address with a zone (%%%s) is not accepted", item, ip.Zone())
		}
		p.IP = ip.Unmap()
		return p, nil
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		p.Wildcard = true
		host = rest
	}
	if host == "" || len(host) > 253 || strings.Contains(host, "*") {
		return p, fmt.Errorf("%q is not a host name, *.domain or IP literal", item)
	}
	labels := strings.Split(host, ".")
	for _, label := range labels {
		if !hostLabelRE.MatchString(label) {
			return p, fmt.Errorf("%q: %q is not a valid DNS label", item, label)
		}
	}
	// A name ending in a number is an IPv4 address to URL parsers (and
	// "1.2.3.4." would otherwise be a host name that prints as the IP
	// literal 1.2.3.4): no top-level domain is numeric.
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		return p, fmt.Errorf("%q: a host name cannot end in a number; write an IP address without a trailing dot", item)
	}
	p.Host = host
	return p, nil
}

// ParseInternalList reads net.allow-internal: host patterns and CIDR
// ranges.
func ParseInternalList(value string) ([]HostPattern, []netip.Prefix, error) {
	var hosts []HostPattern
	var ranges []netip.Prefix
	for _, item := range strings.Split(value, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if strings.Contains(item, "/") {
			pfx, err := netip.ParsePrefix(item)
			if err != nil {
				return nil, nil, fmt.Errorf("%q is not a CIDR range: %v", item, err)
			}
			if pfx.Addr().Is4In6() {
				// ::ffff:a.b.c.d/n names IPv4 addresses, which policy
				// compares as IPv4.
				if pfx.Bits() < 96 {
					return nil, nil, fmt.Errorf("%q: an IPv4-mapped range needs a prefix length of at least 96", item)
				}
				pfx = netip.PrefixFrom(pfx.Addr().Unmap(), pfx.Bits()-96)
			}
			ranges = append(ranges, pfx.Masked())
			continue
		}
		p, err := parseHostPattern(item)
		if err != nil {
			return nil, nil, err
		}
		hosts = append(hosts, p)
	}
	if len(hosts)+len(ranges) == 0 {
		return nil, nil, fmt.Errorf("the list is empty")
	}
	return hosts, ranges, nil
}
