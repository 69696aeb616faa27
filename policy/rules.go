package policy

import (
	"fmt"
	"net/netip"
	"regexp"
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
		if !envNameRE.MatchString(name) {
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
