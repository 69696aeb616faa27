package oci

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// AnnotationPrefix starts every annotation gondolin reads.
const AnnotationPrefix = "io.gondolin."

// Annotation keys (DESIGN.md, "Contracts").
const (
	AnnotationNetMode          = AnnotationPrefix + "net.mode"
	AnnotationNetAllow         = AnnotationPrefix + "net.allow"
	AnnotationNetAllowInternal = AnnotationPrefix + "net.allow-internal"
	AnnotationNetDNS           = AnnotationPrefix + "net.dns"
	AnnotationNetTCPAllow      = AnnotationPrefix + "net.tcp-allow"
	AnnotationSecretPrefix     = AnnotationPrefix + "secret."
	AnnotationVMMemory         = AnnotationPrefix + "vm.memory"
	AnnotationVMCPUs           = AnnotationPrefix + "vm.cpus"
)

var knownAnnotations = []string{
	AnnotationNetMode, AnnotationNetAllow, AnnotationNetAllowInternal, AnnotationNetDNS,
	AnnotationNetTCPAllow, AnnotationSecretPrefix + "NAME", AnnotationVMMemory, AnnotationVMCPUs,
}

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

// Settings are the validated io.gondolin.* annotations of a container.
type Settings struct {
	NetMode NetMode
	Allow   []HostPattern
	// AllowInternal names private, loopback or link-local hosts and ranges
	// that may be reached.
	AllowInternal       []HostPattern
	AllowInternalRanges []netip.Prefix
	DNS                 DNSMode
	// TCPAllow are host:port targets passed through as raw TCP.
	TCPAllow []HostPattern
	// Secrets maps an environment variable name to the hosts its real
	// value may be sent to.
	Secrets map[string][]HostPattern
	// MemoryMiB and CPUs are 0 when not set.
	MemoryMiB uint64
	CPUs      uint32
}

// ParseAnnotations validates every io.gondolin.* annotation. Other
// annotations are not gondolin's and are ignored. All problems are reported
// at once.
func ParseAnnotations(annotations map[string]string, cfg *Config) (*Settings, error) {
	s := &Settings{NetMode: NetModePolicy, DNS: DNSSynthetic, Secrets: map[string][]HostPattern{}}
	var errs []error
	// The operator's defaults first (validated when the config loaded),
	// then what the container sets, each key replacing its default.
	if cfg != nil {
		for _, key := range gondolinKeys(cfg.DefaultAnnotations) {
			if _, ok := annotations[key]; !ok {
				if err := s.set(key, cfg.DefaultAnnotations[key], nil); err != nil {
					errs = append(errs, fmt.Errorf("runtime config default_annotations: %w", err))
				}
			}
		}
	}
	for _, key := range gondolinKeys(annotations) {
		if err := s.set(key, annotations[key], cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// gondolinKeys returns the io.gondolin.* keys of m, sorted.
func gondolinKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if strings.HasPrefix(k, AnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func (s *Settings) set(key, value string, cfg *Config) error {
	if cfg != nil && !cfg.annotationAllowed(key) {
		return fmt.Errorf("annotation %s is not allowed by the runtime config (allowed_annotations = %q)", key, cfg.AllowedAnnotations)
	}
	bad := func(accepted string, err error) error {
		if err != nil {
			return fmt.Errorf("annotation %s=%q is invalid: %v; accepted: %s", key, value, err, accepted)
		}
		return fmt.Errorf("annotation %s=%q is invalid; accepted: %s", key, value, accepted)
	}
	var err error
	switch {
	case key == AnnotationNetMode:
		switch NetMode(value) {
		case NetModePolicy, NetModeOpen, NetModeNone:
			s.NetMode = NetMode(value)
		default:
			return bad("policy, open or none", nil)
		}
	case key == AnnotationNetDNS:
		switch DNSMode(value) {
		case DNSSynthetic, DNSTrusted, DNSOpen:
			s.DNS = DNSMode(value)
		default:
			return bad("synthetic, trusted or open", nil)
		}
	case key == AnnotationNetAllow:
		if s.Allow, err = parseHostList(value, false); err != nil {
			return bad("a comma list of host names (api.github.com), *.domain wildcards (*.npmjs.org) or IP literals, each with an optional :port", err)
		}
	case key == AnnotationNetAllowInternal:
		if s.AllowInternal, s.AllowInternalRanges, err = parseInternalList(value); err != nil {
			return bad("a comma list of host names, IP literals or CIDR ranges (10.0.0.0/8), each host with an optional :port", err)
		}
	case key == AnnotationNetTCPAllow:
		if s.TCPAllow, err = parseHostList(value, true); err != nil {
			return bad("a comma list of host:port targets (db.example.com:5432)", err)
		}
	case strings.HasPrefix(key, AnnotationSecretPrefix):
		name := strings.TrimPrefix(key, AnnotationSecretPrefix)
		if !envNameRE.MatchString(name) {
			return fmt.Errorf("annotation %s names secret %q, which is not an environment variable name (letters, digits and _, not starting with a digit)", key, name)
		}
		hosts, err := parseSecretHosts(value)
		if err != nil || len(hosts) == 0 {
			return bad("a comma list of the hosts the secret may be sent to, each host[:port] (HTTPS, port 443 by default) or http://host[:port] (plain HTTP, port 80 by default)", err)
		}
		s.Secrets[name] = hosts
	case key == AnnotationVMMemory:
		if s.MemoryMiB, err = parseMemory(value); err != nil {
			return bad("a size of at least 64 MiB: 512M, 2G, or a number of MiB", err)
		}
	case key == AnnotationVMCPUs:
		n, err := strconv.ParseUint(value, 10, 32)
		if err != nil || n < 1 || n > 255 {
			return bad("a whole number of vCPUs from 1 to 255", nil)
		}
		s.CPUs = uint32(n)
	default:
		return fmt.Errorf("annotation %s is not known; gondolin accepts %s", key, strings.Join(knownAnnotations, ", "))
	}
	return nil
}

var (
	envNameRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	hostLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

func parseHostList(value string, portRequired bool) ([]HostPattern, error) {
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

// parseSecretHosts reads the hosts of io.gondolin.secret.NAME: each is
// [scheme://]host[:port]. Without a scheme a secret is bound to HTTPS: the
// value only ever travels inside TLS the host verified, and only to the
// named port (443 when none is given). http:// binds it to plain HTTP
// (port 80 by default) and must be asked for explicitly.
func parseSecretHosts(value string) ([]HostPattern, error) {
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
	for _, label := range strings.Split(host, ".") {
		if !hostLabelRE.MatchString(label) {
			return p, fmt.Errorf("%q: %q is not a valid DNS label", item, label)
		}
	}
	p.Host = host
	return p, nil
}

func parseInternalList(value string) ([]HostPattern, []netip.Prefix, error) {
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

// parseMemory reads 512M, 2G, 1024 (MiB), 512Mi, 2Gi.
func parseMemory(v string) (uint64, error) {
	s := strings.TrimSuffix(strings.TrimSpace(v), "i")
	mult := uint64(1)
	switch {
	case strings.HasSuffix(s, "G") || strings.HasSuffix(s, "g"):
		mult, s = 1024, s[:len(s)-1]
	case strings.HasSuffix(s, "M") || strings.HasSuffix(s, "m"):
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size", v)
	}
	mib := n * mult
	if mib < minMemoryMiB {
		return 0, fmt.Errorf("%d MiB is below the minimum", mib)
	}
	return mib, nil
}
