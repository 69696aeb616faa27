package policy

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

// PlaceholderPrefix starts every secret placeholder the guest sees.
const PlaceholderPrefix = "GONDOLIN_SECRET_"

// minRealValueLen is the shortest real value looked for in requests to
// hosts the secret is not allowed for; shorter values would match ordinary
// text. Placeholders are always looked for, and all values are redacted.
const minRealValueLen = 8

type secret struct {
	name        string
	value       string
	placeholder string
	hosts       []HostPattern
	// forms are the value's encodings looked for in what comes back and in
	// what goes elsewhere, each with the placeholder's same encoding.
	forms []pattern
}

type secretSet struct {
	list     []*secret
	redactor *strings.Replacer
	// back replaces every form of every value in what comes back to the
	// guest; leak finds a value's forms in what goes to a host it is not
	// bound to.
	back *matcher
	// backLong is back for values of at least minRealValueLen bytes:
	// what a response from a host no secret is bound to is cut for (a
	// short value would cut ordinary responses).
	backLong *matcher
}

// NewPlaceholder returns a fresh placeholder: what the guest sees in place
// of a secret's value (for a container without a network too, whose
// secrets have nowhere to go but must not reach the VM either).
func NewPlaceholder() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return PlaceholderPrefix + hex.EncodeToString(b)
}

// valueForms lists the encodings of value that an echoing server, a log or
// a hostile guest may carry it in, each paired with the same encoding of
// ph: as is, URL-escaped, JSON-escaped and base64 (standard and URL
// alphabets, padded or not). base64Cores adds the part of its base64
// encoding that does not depend on neighbouring bytes, at each of the three
// alignments, so the value is found inside a longer base64 blob too (Basic
// credentials "user:value", a JWT). Forms shorter than minRealValueLen are
// left out unless they are the value itself: they would match ordinary text.
func valueForms(name, value, ph string) []pattern {
	var out []pattern
	add := func(from, to string) {
		if from == "" || (len(from) < minRealValueLen && from != value) {
			return
		}
		out = append(out, pattern{from: []byte(from), to: []byte(to), name: name})
	}
	add(value, ph)
	add(url.QueryEscape(value), ph)
	add(url.PathEscape(value), ph)
	add(jsonEscape(value, true), ph)
	add(jsonEscape(value, false), ph)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		add(enc.EncodeToString([]byte(value)), enc.EncodeToString([]byte(ph)))
	}
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		for a := 0; a < 3; a++ {
			add(base64Core(enc, value, a), base64Core(enc, ph, a))
		}
	}
	return out
}

func jsonEscape(s string, html bool) string {
	var b strings.Builder
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(html)
	if err := e.Encode(s); err != nil {
		return ""
	}
	out := strings.TrimSpace(b.String())
	return out[1 : len(out)-1]
}

// base64Core is the run of base64 characters that encode only bytes of s
// when s starts at byte offset align (mod 3) of a longer input.
func base64Core(enc *base64.Encoding, s string, align int) string {
	full := enc.EncodeToString(append(make([]byte, align), s...))
	first := (8*align + 5) / 6
	last := (8*(align+len(s)) - 6) / 6 // inclusive
	if last < first || last >= len(full) {
		return ""
	}
	return full[first : last+1]
}

func newSecretSet(m map[string]Secret) *secretSet {
	s := &secretSet{}
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	type pair struct{ from, to string }
	var pairs []pair
	var back, long []pattern
	for _, name := range names {
		sec := &secret{name: name, value: m[name].Value, placeholder: NewPlaceholder(), hosts: m[name].Hosts}
		sec.forms = valueForms(name, sec.value, sec.placeholder)
		back = append(back, sec.forms...)
		if len(sec.value) >= minRealValueLen {
			long = append(long, sec.forms...)
		}
		s.list = append(s.list, sec)
		tag := "[secret " + name + "]"
		pairs = append(pairs, pair{sec.placeholder, "[placeholder " + name + "]"},
			pair{strings.ToLower(sec.placeholder), "[placeholder " + name + "]"})
		for _, f := range sec.forms {
			pairs = append(pairs, pair{string(f.from), tag})
		}
	}
	// Longest first, so a value containing another is redacted whole.
	sort.SliceStable(pairs, func(i, j int) bool { return len(pairs[i].from) > len(pairs[j].from) })
	var args []string
	for _, p := range pairs {
		args = append(args, p.from, p.to)
	}
	if len(args) > 0 {
		s.redactor = strings.NewReplacer(args...)
	}
	s.back = newMatcher(back)
	s.backLong = newMatcher(long)
	return s
}

// redact removes every real value and placeholder from text.
func (s *secretSet) redact(text string) string {
	if s == nil || s.redactor == nil || text == "" {
		return text
	}
	return s.redactor.Replace(text)
}

func (s *secretSet) placeholders() map[string]string {
	out := make(map[string]string, len(s.list))
	for _, sec := range s.list {
		out[sec.name] = sec.placeholder
	}
	return out
}

func isAuthHeader(k string) bool {
	return k == "Authorization" || k == "Proxy-Authorization"
}

// decodeBasic returns the decoded credentials of a Basic authorization
// value.
func decodeBasic(v string) (string, bool) {
	scheme, cred, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", false
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", false
	}
	return string(b), true
}

// allowedFor reports whether sec may be sent to host:port over scheme: a
// host pattern matches, the scheme is the pattern's (https unless it named
// http://) and the port is the pattern's or the scheme's default.
func (sec *secret) allowedFor(scheme, host string, port uint16) bool {
	for _, p := range sec.hosts {
		want := p.Scheme
		if want == "" {
			want = SchemeHTTPS
		}
		if want == scheme && p.DefaultPort() == port && matchHost(p, host) {
			return true
		}
	}
	return false
}

// boundTo reports whether any secret may be sent to host:port over scheme.
func (s *secretSet) boundTo(scheme, host string, port uint16) bool {
	for _, sec := range s.list {
		if sec.allowedFor(scheme, host, port) {
			return true
		}
	}
	return false
}

// leakMatcher finds, in what goes to host:port over scheme, the
// placeholder (in any case) and the value forms of every secret not bound
// there. nil when every secret may go there.
func (s *secretSet) leakMatcher(scheme, host string, port uint16) *matcher {
	var pats []pattern
	for _, sec := range s.list {
		if sec.allowedFor(scheme, host, port) {
			continue
		}
		pats = append(pats, pattern{from: []byte(strings.ToLower(sec.placeholder)), fold: true, name: sec.name})
		if len(sec.value) >= minRealValueLen {
			pats = append(pats, sec.forms...)
		}
	}
	return newMatcher(pats)
}

// applied is what apply did to a request.
type applied struct {
	// blocked names a secret found in a request to a host it is not
	// bound to; nothing was changed then.
	blocked string
	// used: a secret bound to the host was found, so the host (not the
	// guest's choice of address) must decide where the request goes.
	used bool
	// substituted: a placeholder was replaced by its value.
	substituted bool
	// echo pairs each header value that now carries a value with what the
	// guest sent, so an echo of it is turned back.
	echo []pattern
}

// apply handles the secrets of a request to host:port over scheme: find,
// then substitute what it found unless it blocked the request (then
// nothing is changed).
func (s *secretSet) apply(r *http.Request, scheme, host string, port uint16) applied {
	use, blocked := s.find(r, scheme, host, port)
	if blocked != "" {
		return applied{blocked: blocked}
	}
	return s.substitute(r, use)
}

// find reports the secrets a request to host:port over scheme carries, in
// its method, target, Host or headers (as its placeholder in any case, or
// its value). A secret that may not go there blocks the whole request:
// find then reports that secret's name. Otherwise use lists the secrets
// found, all bound there. r is not changed.
func (s *secretSet) find(r *http.Request, scheme, host string, port uint16) (use []*secret, blocked string) {
	if len(s.list) == 0 {
		return nil, ""
	}
	hay := []string{strings.ToLower(host), r.Host, r.Method, r.RequestURI, r.URL.Path, r.URL.RawPath, r.URL.RawQuery, r.URL.Opaque}
	if q, err := url.QueryUnescape(r.URL.RawQuery); err == nil {
		hay = append(hay, q)
	}
	if p, err := url.PathUnescape(r.URL.EscapedPath()); err == nil {
		hay = append(hay, p)
	}
	if r.URL.User != nil {
		hay = append(hay, r.URL.User.String())
	}
	for _, hdr := range []http.Header{r.Header, r.Trailer} {
		for k, vs := range hdr {
			hay = append(hay, k)
			for _, v := range vs {
				hay = append(hay, v)
				if isAuthHeader(k) {
					if d, ok := decodeBasic(v); ok {
						hay = append(hay, d)
					}
				}
			}
		}
	}
	for _, sec := range s.list {
		lowerPH := strings.ToLower(sec.placeholder)
		found := false
		for _, h := range hay {
			// Placeholders are matched in any case (header names are
			// canonicalised, host names lower-cased).
			if strings.Contains(strings.ToLower(h), lowerPH) ||
				(len(sec.value) >= minRealValueLen && strings.Contains(h, sec.value)) {
				found = true
				break
			}
		}
		if !found {
			continue
		}
		if !sec.allowedFor(scheme, host, port) {
			return nil, sec.name
		}
		use = append(use, sec)
	}
	return use, ""
}

// substitute replaces the placeholders of the secrets in use (which find
// reported) by their real values in every header value (inside Basic
// credentials too) and in the query string.
func (s *secretSet) substitute(r *http.Request, use []*secret) applied {
	var res applied
	res.used = len(use) > 0
	for k, vs := range r.Header {
		for i, v := range vs {
			nv := v
			for _, sec := range use {
				if isAuthHeader(k) {
					if d, ok := decodeBasic(nv); ok && strings.Contains(d, sec.placeholder) {
						scheme, _, _ := strings.Cut(nv, " ")
						nv = scheme + " " + base64.StdEncoding.EncodeToString([]byte(strings.ReplaceAll(d, sec.placeholder, sec.value)))
						continue
					}
				}
				nv = strings.ReplaceAll(nv, sec.placeholder, sec.value)
			}
			if nv != v {
				vs[i] = nv
				res.substituted = true
				res.echo = append(res.echo, pattern{from: []byte(nv), to: []byte(v)})
			}
		}
	}
	for _, sec := range use {
		if strings.Contains(r.URL.RawQuery, sec.placeholder) {
			r.URL.RawQuery = strings.ReplaceAll(r.URL.RawQuery, sec.placeholder, url.QueryEscape(sec.value))
			res.substituted = true
		}
	}
	return res
}
