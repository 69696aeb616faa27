package policy

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// Rules are a policy as a user writes it: the mode, the allow lists and
// the hosts each secret may be sent to. Container annotations and the
// runtime config both fill them through Set, so a key means the same
// wherever it is written. Config turns them into what a Network runs.
type Rules struct {
	Mode NetMode
	DNS  DNSMode
	// Allow lists the hosts HTTP and HTTPS requests may go to.
	Allow []HostPattern
	// AllowInternal and AllowInternalRanges name private, loopback or
	// link-local hosts and ranges that may be reached.
	AllowInternal       []HostPattern
	AllowInternalRanges []netip.Prefix
	// TCPAllow are host:port targets passed through as raw TCP.
	TCPAllow []HostPattern
	// Secrets maps an environment variable name to the hosts its real
	// value may be sent to.
	Secrets map[string][]HostPattern
}

// DefaultRules are the rules of a container that writes none: policy
// mode (nothing allowed), synthetic DNS, no secrets.
func DefaultRules() Rules {
	return Rules{Mode: NetModePolicy, DNS: DNSSynthetic, Secrets: map[string][]HostPattern{}}
}

// IsKey reports whether key is one Set reads.
func IsKey(key string) bool {
	switch key {
	case KeyMode, KeyDNS, KeyAllow, KeyAllowInternal, KeyTCPAllow:
		return true
	}
	return strings.HasPrefix(key, KeySecretPrefix)
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidSecretName reports whether name can name a secret: an environment
// variable name (letters, digits and _, not starting with a digit).
func ValidSecretName(name string) bool { return envNameRE.MatchString(name) }

// Set reads the rule written as key=value; key is one of the Key*
// constants or KeySecretPrefix+NAME. The error names the key, the value
// and what would be accepted.
func (r *Rules) Set(key, value string) error {
	bad := func(accepted string, err error) error {
		if err != nil {
			return fmt.Errorf("%s=%q is invalid: %v; accepted: %s", key, value, err, accepted)
		}
		return fmt.Errorf("%s=%q is invalid; accepted: %s", key, value, accepted)
	}
	var err error
	switch {
	case key == KeyMode:
		if r.Mode, err = ParseNetMode(value); err != nil {
			return bad("policy, open or none", nil)
		}
	case key == KeyDNS:
		if r.DNS, err = ParseDNSMode(value); err != nil {
			return bad("synthetic, trusted or open", nil)
		}
	case key == KeyAllow:
		if r.Allow, err = ParseHostList(value, false); err != nil {
			return bad("a comma list of host names (api.github.com), *.domain wildcards (*.npmjs.org) or IP literals, each with an optional :port", err)
		}
	case key == KeyAllowInternal:
		if r.AllowInternal, r.AllowInternalRanges, err = ParseInternalList(value); err != nil {
			return bad("a comma list of host names, IP literals or CIDR ranges (10.0.0.0/8), each host with an optional :port", err)
		}
	case key == KeyTCPAllow:
		if r.TCPAllow, err = ParseHostList(value, true); err != nil {
			return bad("a comma list of host:port targets (db.example.com:5432)", err)
		}
	case strings.HasPrefix(key, KeySecretPrefix):
		name := strings.TrimPrefix(key, KeySecretPrefix)
		if !ValidSecretName(name) {
			return fmt.Errorf("%s names secret %q, which is not an environment variable name (letters, digits and _, not starting with a digit)", key, name)
		}
		hosts, err := ParseSecretHosts(value)
		if err != nil || len(hosts) == 0 {
			return bad("a comma list of the hosts the secret may be sent to, each host[:port] (HTTPS, port 443 by default) or http://host[:port] (plain HTTP, port 80 by default)", err)
		}
		if r.Secrets == nil {
			r.Secrets = map[string][]HostPattern{}
		}
		r.Secrets[name] = hosts
	default:
		return fmt.Errorf("%s is not a policy key", key)
	}
	return nil
}

// Config returns the policy part of a network's Config. secretValues holds
// the real value of each secret (the runtime reads them on the host); the
// rest of Config is the caller's to fill.
func (r Rules) Config(secretValues map[string]string) Config {
	c := Config{
		Mode:                r.Mode,
		DNS:                 r.DNS,
		Allow:               r.Allow,
		AllowInternal:       r.AllowInternal,
		AllowInternalRanges: r.AllowInternalRanges,
		TCPAllow:            r.TCPAllow,
	}
	if len(r.Secrets) > 0 {
		c.Secrets = make(map[string]Secret, len(r.Secrets))
		for name, hosts := range r.Secrets {
			c.Secrets[name] = Secret{Value: secretValues[name], Hosts: hosts}
		}
	}
	return c
}

// Union joins the rules of several named policies into one: their lists
// and secret hosts together. Mode and DNS are left empty when no policy
// sets them; two policies that set different ones conflict, and the error
// names both.
func Union(named map[string]Rules, names []string) (Rules, error) {
	var out Rules
	modeFrom, dnsFrom := "", ""
	for _, name := range names {
		r, ok := named[name]
		if !ok {
			return Rules{}, fmt.Errorf("policy %q is not defined", name)
		}
		if r.Mode != "" {
			if out.Mode != "" && out.Mode != r.Mode {
				return Rules{}, fmt.Errorf("policies %q and %q set different modes (%s, %s)", modeFrom, name, out.Mode, r.Mode)
			}
			out.Mode, modeFrom = r.Mode, name
		}
		if r.DNS != "" {
			if out.DNS != "" && out.DNS != r.DNS {
				return Rules{}, fmt.Errorf("policies %q and %q set different DNS modes (%s, %s)", dnsFrom, name, out.DNS, r.DNS)
			}
			out.DNS, dnsFrom = r.DNS, name
		}
		out = out.addLists(r)
	}
	return out, nil
}

// Overlay returns r with o written over it: o's mode and DNS win where o
// sets them, and o's lists and secret hosts are added to r's.
func (r Rules) Overlay(o Rules) Rules {
	out := r.addLists(o)
	if o.Mode != "" {
		out.Mode = o.Mode
	}
	if o.DNS != "" {
		out.DNS = o.DNS
	}
	return out
}

// WithDefaults fills an unset mode and DNS mode from DefaultRules.
func (r Rules) WithDefaults() Rules {
	d := DefaultRules()
	if r.Mode == "" {
		r.Mode = d.Mode
	}
	if r.DNS == "" {
		r.DNS = d.DNS
	}
	if r.Secrets == nil {
		r.Secrets = d.Secrets
	}
	return r
}

// addLists returns r's lists with o's entries added, without repeats;
// neither r nor o is changed.
func (r Rules) addLists(o Rules) Rules {
	out := r
	out.Allow = unionPatterns(r.Allow, o.Allow)
	out.AllowInternal = unionPatterns(r.AllowInternal, o.AllowInternal)
	out.TCPAllow = unionPatterns(r.TCPAllow, o.TCPAllow)
	out.AllowInternalRanges = nil
	for _, p := range append(append([]netip.Prefix(nil), r.AllowInternalRanges...), o.AllowInternalRanges...) {
		if !slices.Contains(out.AllowInternalRanges, p) {
			out.AllowInternalRanges = append(out.AllowInternalRanges, p)
		}
	}
	if len(r.Secrets)+len(o.Secrets) > 0 {
		out.Secrets = make(map[string][]HostPattern, len(r.Secrets)+len(o.Secrets))
		for name, hosts := range r.Secrets {
			out.Secrets[name] = unionPatterns(nil, hosts)
		}
		for name, hosts := range o.Secrets {
			out.Secrets[name] = unionPatterns(out.Secrets[name], hosts)
		}
	}
	return out
}

func unionPatterns(a, b []HostPattern) []HostPattern {
	out := append([]HostPattern(nil), a...)
	for _, p := range b {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}
