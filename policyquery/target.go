package policyquery

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/earendil-works/gondolin-containerd/oci"
)

// InputError is bad input: a target, annotation, header or method that
// cannot be right, or a runtime config that does not load. Its message
// names what was wrong and what is accepted.
type InputError struct{ msg string }

func (e *InputError) Error() string { return e.msg }

func inputErrorf(format string, args ...any) error {
	return &InputError{fmt.Sprintf(format, args...)}
}

// Protocols a Target is tested as.
const (
	ProtoHTTP  = "http"
	ProtoHTTPS = "https"
	ProtoTCP   = "tcp"
)

// Target is what a guest would reach: an HTTP or HTTPS URL, or a raw TCP
// HOST:PORT.
type Target struct {
	// Protocol is ProtoHTTP, ProtoHTTPS or ProtoTCP.
	Protocol string
	// Host is the host as written (without brackets or a trailing dot),
	// lower case: a name or an IP literal.
	Host string
	Port uint16
	// URL is the URL of an HTTP or HTTPS target; nil for raw TCP.
	URL *url.URL
}

// String is the target as the user would write it.
func (t Target) String() string {
	if t.URL != nil {
		return t.URL.String()
	}
	return net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port)))
}

// IP is the target's address when its host is an IP literal.
func (t Target) IP() (netip.Addr, bool) {
	ip, err := netip.ParseAddr(t.Host)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

const targetForms = "an http:// or https:// URL (https://api.github.com/user) or HOST:PORT for raw TCP (db.example.com:5432, [2001:db8::1]:22)"

// ParseTarget reads the URL or HOST:PORT argument.
func ParseTarget(s string) (Target, error) {
	if strings.Contains(s, "://") {
		return parseURL(s)
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return Target{}, inputErrorf("target %q is neither a URL nor HOST:PORT (%v); accepted: %s", s, err, targetForms)
	}
	port, err := parsePort(portStr)
	if err != nil {
		return Target{}, inputErrorf("target %q: %v; accepted: %s", s, err, targetForms)
	}
	h, err := cleanHost(host)
	if err != nil {
		return Target{}, inputErrorf("target %q: %v; accepted: %s", s, err, targetForms)
	}
	return Target{Protocol: ProtoTCP, Host: h, Port: port}, nil
}

func parseURL(s string) (Target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Target{}, inputErrorf("target %q is not a URL: %v; accepted: %s", s, err, targetForms)
	}
	t := Target{URL: u}
	switch u.Scheme {
	case "http":
		t.Protocol, t.Port = ProtoHTTP, 80
	case "https":
		t.Protocol, t.Port = ProtoHTTPS, 443
	default:
		return Target{}, inputErrorf("target %q: scheme %q is not tested; accepted: %s", s, u.Scheme, targetForms)
	}
	if u.User != nil {
		return Target{}, inputErrorf("target %q carries a user name or password: give credentials as --header 'Authorization: ...'", s)
	}
	if u.Opaque != "" {
		return Target{}, inputErrorf("target %q has no host (write %s://HOST/...)", s, u.Scheme)
	}
	if p := u.Port(); p != "" {
		if t.Port, err = parsePort(p); err != nil {
			return Target{}, inputErrorf("target %q: %v", s, err)
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return Target{}, inputErrorf("target %q: empty port", s)
	}
	if t.Host, err = cleanHost(u.Hostname()); err != nil {
		return Target{}, inputErrorf("target %q: %v; accepted: %s", s, err, targetForms)
	}
	return t, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

// cleanHost lower-cases host and drops a trailing dot; the policy then
// decides whether it is a plausible name. IPv6 zones are refused, as the
// policy refuses them.
func cleanHost(host string) (string, error) {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if h == "" {
		return "", fmt.Errorf("no host")
	}
	if strings.Contains(h, "%") {
		return "", fmt.Errorf("host %q has an IPv6 zone, which no guest address carries", host)
	}
	return h, nil
}

// ParseAnnotation reads one --annotation KEY=VALUE into annotations. Only
// io.gondolin.* keys are accepted: the shim ignores every other
// annotation, so another key would be a typo the test silently ignored.
func ParseAnnotation(annotations map[string]string, kv string) error {
	key, value, ok := strings.Cut(kv, "=")
	if !ok || key == "" {
		return inputErrorf("annotation %q: accepted form is KEY=VALUE, e.g. %s=api.github.com", kv, oci.AnnotationNetAllow)
	}
	if !strings.HasPrefix(key, oci.AnnotationPrefix) {
		return inputErrorf("annotation %q: only %s* keys shape the policy (the shim ignores others), e.g. %s=api.github.com", key, oci.AnnotationPrefix, oci.AnnotationNetAllow)
	}
	if _, dup := annotations[key]; dup {
		return inputErrorf("annotation %s is given twice: give each key once (a list is one comma-separated value)", key)
	}
	annotations[key] = value
	return nil
}

// ParseHeader reads one --header 'Name: value' into h.
func ParseHeader(h http.Header, line string) error {
	name, value, ok := strings.Cut(line, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" || !validToken(name) {
		return inputErrorf("header %q: accepted form is 'Name: value', e.g. 'Authorization: Bearer $TOKEN'", line)
	}
	value = strings.TrimSpace(value)
	if strings.ContainsAny(value, "\r\n\x00") {
		return inputErrorf("header %q: a value may not hold CR, LF or NUL", name)
	}
	if http.CanonicalHeaderKey(name) == "Host" {
		return inputErrorf("header Host: the URL's host is the Host header; test that host's URL instead")
	}
	h.Add(name, value)
	return nil
}

// CheckMethod checks an HTTP method (a token such as GET or POST).
func CheckMethod(m string) error {
	if m == "" || !validToken(m) {
		return inputErrorf("method %q: accepted is an HTTP method such as GET, POST, PUT, DELETE", m)
	}
	return nil
}

// validToken reports whether s is an HTTP token (RFC 9110 tchar).
func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return s != ""
}
