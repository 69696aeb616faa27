package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/earendil-works/gondolin-containerd/oci"
	"github.com/earendil-works/gondolin-containerd/policy"
)

// NamedPolicy is one [policies.NAME] table: an egress policy a container
// picks with io.gondolin.policy=NAME instead of writing the lists itself.
// The keys are the io.gondolin.net.* annotations without their prefix;
// each list is a TOML array or a comma-separated string, as the
// annotation.
type NamedPolicy struct {
	Mode          string                `toml:"mode"`
	DNS           string                `toml:"dns"`
	Allow         StringList            `toml:"allow"`
	AllowInternal StringList            `toml:"allow_internal"`
	TCPAllow      StringList            `toml:"tcp_allow"`
	Secrets       map[string]StringList `toml:"secrets"`
}

// StringList is a TOML array of strings or one comma-separated string.
type StringList []string

// UnmarshalTOML takes "a,b" or ["a", "b"].
func (l *StringList) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		*l = StringList{v}
		return nil
	case []any:
		out := make(StringList, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("%#v is not a string: want a list of strings or one comma-separated string", e)
			}
			out = append(out, s)
		}
		*l = out
		return nil
	}
	return fmt.Errorf("%#v: want a list of strings or one comma-separated string", v)
}

func (l StringList) joined() string { return strings.Join(l, ",") }

// rules parses the table into the policy's Rules; what it leaves unset
// stays empty (Union and Overlay tell unset from set).
func (p NamedPolicy) rules(name string) (policy.Rules, error) {
	var r policy.Rules
	var errs []error
	set := func(field, key, value string) {
		if value == "" {
			return
		}
		if err := r.Set(key, value); err != nil {
			errs = append(errs, fmt.Errorf("policies.%s.%s: %w", name, field, err))
		}
	}
	set("mode", policy.KeyMode, p.Mode)
	set("dns", policy.KeyDNS, p.DNS)
	set("allow", policy.KeyAllow, p.Allow.joined())
	set("allow_internal", policy.KeyAllowInternal, p.AllowInternal.joined())
	set("tcp_allow", policy.KeyTCPAllow, p.TCPAllow.joined())
	for secret, hosts := range p.Secrets {
		if hosts.joined() == "" {
			errs = append(errs, fmt.Errorf("policies.%s.secrets.%s: list at least one host", name, secret))
			continue
		}
		set("secrets."+secret, policy.KeySecretPrefix+secret, hosts.joined())
	}
	return r, errors.Join(errs...)
}

// parsePolicies checks every [policies.NAME] table and keeps its rules.
func (c *Config) parsePolicies() []error {
	var errs []error
	c.policies = make(map[string]policy.Rules, len(c.Policies))
	names := make([]string, 0, len(c.Policies))
	for name := range c.Policies {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !oci.PolicyNameRE.MatchString(name) {
			errs = append(errs, fmt.Errorf("policies.%q: a policy name is 1 to 63 letters, digits, '_' or '-', starting with a letter or digit", name))
			continue
		}
		r, err := c.Policies[name].rules(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.policies[name] = r
	}
	return errs
}

// SecretSource is one [secrets.NAME] table: where the shim reads the real
// value of secret NAME on the host, so no container manager ever holds
// it, and the hosts it may ever be sent to. Exactly one of File and Env is
// set.
type SecretSource struct {
	// Hosts bound the secret: a container (its io.gondolin.secret.NAME or
	// a named policy) may bind it to these hosts or a part of them, never
	// to others, since whoever writes a container's annotations could
	// otherwise send the operator's token to a server of their own.
	// Entries are written as io.gondolin.secret.NAME's
	// ([http://]host[:port]). Required.
	Hosts StringList `toml:"hosts"`
	// File is read at each create; it must be a regular file that only
	// its owner (root, or the shim's user) can read or write.
	File string `toml:"file"`
	// Env names a variable of the shim's own environment.
	Env string `toml:"env"`
}

// maxSecretFileBytes bounds a secret file: a token, not a database.
const maxSecretFileBytes = 64 << 10

func (c *Config) checkSecretSources() []error {
	var errs []error
	for name, src := range c.Secrets {
		key := "secrets." + name
		if !policy.ValidSecretName(name) {
			errs = append(errs, fmt.Errorf("%s: %q is not an environment variable name (letters, digits and _, not starting with a digit)", key, name))
		}
		if len(src.Hosts) == 0 {
			errs = append(errs, fmt.Errorf("%s: list the hosts the secret may be sent to (hosts = [\"api.example.com\"]): a container may bind it to these, never to others", key))
		} else if _, err := policy.ParseSecretHosts(src.Hosts.joined()); err != nil {
			errs = append(errs, fmt.Errorf("%s.hosts: %w; accepted: [http://|https://]host[:port] entries", key, err))
		}
		switch {
		case (src.File == "") == (src.Env == ""):
			errs = append(errs, fmt.Errorf("%s: set exactly one of file (a path on the host) or env (a variable of the shim's environment)", key))
		case src.File != "" && !strings.HasPrefix(src.File, "/"):
			errs = append(errs, fmt.Errorf("%s.file = %q: must be an absolute path", key, src.File))
		}
	}
	return errs
}

// CheckSecretBinding refuses a binding of secret name to hosts that its
// host source ([secrets.NAME] hosts) does not list. A secret without a host
// source may go where the container says.
func (c *Config) CheckSecretBinding(name string, hosts []policy.HostPattern) error {
	src, ok := c.Secrets[name]
	if !ok {
		return nil
	}
	allowed, err := policy.ParseSecretHosts(src.Hosts.joined())
	if err != nil {
		return fmt.Errorf("secret %s: secrets.%s.hosts: %w", name, name, err)
	}
	for _, h := range hosts {
		if !slices.Contains(allowed, h) {
			return fmt.Errorf("secret %s may not be sent to %s: the runtime config's secrets.%s.hosts allows only %s", name, h, name, src.Hosts.joined())
		}
	}
	return nil
}

// SecretValue reads the real value of secret name from its host source,
// for a container that binds it to hosts. ok is false when the config names
// no source for it (the value then comes from the container's environment,
// as before). A host the source does not list fails, before the value is
// read. The error names the secret and the source, never the value.
func (c *Config) SecretValue(name string, hosts []policy.HostPattern) (value string, ok bool, err error) {
	src, ok := c.Secrets[name]
	if !ok {
		return "", false, nil
	}
	if err := c.CheckSecretBinding(name, hosts); err != nil {
		return "", true, err
	}
	if src.Env != "" {
		v, found := os.LookupEnv(src.Env)
		if !found || v == "" {
			return "", true, fmt.Errorf("secret %s: the shim's environment has no %s (secrets.%s.env)", name, src.Env, name)
		}
		return v, true, nil
	}
	v, err := readSecretFile(src.File)
	if err != nil {
		return "", true, fmt.Errorf("secret %s: %w (secrets.%s.file)", name, err, name)
	}
	return v, true, nil
}

// readSecretFile reads a secret file after checking that only its owner
// can read it and that the owner is root or this process's user; one
// trailing newline is dropped.
func readSecretFile(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscallNoFollow, 0)
	if err != nil {
		return "", fmt.Errorf("cannot open %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("stat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%s has mode %04o, which lets other users read or change it: chmod 600 it", path, perm)
	}
	if uid, ok := fileOwner(fi); ok && uid != 0 && uid != os.Geteuid() {
		return "", fmt.Errorf("%s is owned by uid %d: only root or the shim's user may own a secret file", path, uid)
	}
	if fi.Size() > maxSecretFileBytes {
		return "", fmt.Errorf("%s is %d bytes: a secret file holds at most %d", path, fi.Size(), maxSecretFileBytes)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileBytes))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if v == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return v, nil
}
