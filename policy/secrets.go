package policy

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/earendil-works/gondolin-containerd/oci"
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
	hosts       []oci.HostPattern
}

type secretSet struct {
	list     []*secret
	redactor *strings.Replacer
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

func newSecretSet(m map[string]Secret) *secretSet {
	s := &secretSet{}
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	type pair struct{ from, to string }
	var pairs []pair
	for _, name := range names {
		sec := &secret{name: name, value: m[name].Value, placeholder: NewPlaceholder(), hosts: m[name].Hosts}
		s.list = append(s.list, sec)
		tag := "[secret " + name + "]"
		pairs = append(pairs, pair{sec.placeholder, "[placeholder " + name + "]"},
			pair{strings.ToLower(sec.placeholder), "[placeholder " + name + "]"})
		for _, form := range []string{sec.value, url.QueryEscape(sec.value), url.PathEscape(sec.value), base64.StdEncoding.EncodeToString([]byte(sec.value))} {
			if form != "" {
				pairs = append(pairs, pair{form, tag})
			}
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

// apply handles the secrets of a request to host:port. A secret found in
// the request (as its placeholder or its real value) that may not go to
// host blocks the whole request: apply then returns that secret's name and
// changes nothing. Otherwise placeholders of the secrets allowed for host
// are replaced by their real values in every header value (inside Basic
// credentials too) and in the query string, and apply reports whether it
// replaced any.
func (s *secretSet) apply(r *http.Request, host string, port uint16) (substituted bool, blockedBy string) {
	if len(s.list) == 0 {
		return false, ""
	}
	hay := []string{strings.ToLower(host), r.URL.Path, r.URL.RawPath, r.URL.RawQuery}
	if q, err := url.QueryUnescape(r.URL.RawQuery); err == nil {
		hay = append(hay, q)
	}
	for k, vs := range r.Header {
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
	var use []*secret
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
		if !matchAny(sec.hosts, host, port) {
			return false, sec.name
		}
		use = append(use, sec)
	}
	for _, sec := range use {
		for k, vs := range r.Header {
			for i, v := range vs {
				if isAuthHeader(k) {
					if d, ok := decodeBasic(v); ok && strings.Contains(d, sec.placeholder) {
						scheme, _, _ := strings.Cut(v, " ")
						vs[i] = scheme + " " + base64.StdEncoding.EncodeToString([]byte(strings.ReplaceAll(d, sec.placeholder, sec.value)))
						substituted = true
						continue
					}
				}
				if strings.Contains(v, sec.placeholder) {
					vs[i] = strings.ReplaceAll(v, sec.placeholder, sec.value)
					substituted = true
				}
			}
		}
		if strings.Contains(r.URL.RawQuery, sec.placeholder) {
			r.URL.RawQuery = strings.ReplaceAll(r.URL.RawQuery, sec.placeholder, url.QueryEscape(sec.value))
			substituted = true
		}
	}
	return substituted, ""
}
