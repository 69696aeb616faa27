package policy

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"testing"
)

// chunkReader returns data in the chunk sizes the fuzzer chose.
type chunkReader struct {
	data  []byte
	sizes []byte
	i     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(c.data)
	if len(c.sizes) > 0 {
		n = int(c.sizes[c.i%len(c.sizes)]) + 1
		c.i++
	}
	n = min(n, len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// FuzzRedactStream: the streamed redactor gives what redacting the whole
// text at once gives, however the stream is cut, and in fail mode stops
// exactly when the whole text holds a match, before any of it is passed.
func FuzzRedactStream(f *testing.F) {
	f.Add("s3cr3t-VALUE-xyz!", []byte("a s3cr3t-VALUE-xyz! b"), []byte{0, 3, 1})
	f.Add("abcdefgh", []byte("abcdabcdefghefgh YWJjZGVmZ2g="), []byte{7})
	f.Add("v", []byte("vvvv"), []byte{})
	f.Fuzz(func(t *testing.T, value string, data, sizes []byte) {
		if value == "" || len(value) > 200 || len(data) > 1<<16 {
			return
		}
		set := newSecretSet(map[string]Secret{"S": {Value: value}, "F": {Value: "s3cr3t-VALUE-xyz!"}})
		m := set.back
		want := m.replace(string(data))
		sf := newStreamFilter(io.NopCloser(&chunkReader{data: data, sizes: sizes}), m, true)
		got, err := io.ReadAll(sf)
		if err != nil || string(got) != want {
			t.Fatalf("streamed %q, whole %q, err %v", got, want, err)
		}
		if strings.Contains(string(data), "s3cr3t-VALUE-xyz!") && strings.Contains(want, "s3cr3t-VALUE-xyz!") && !strings.Contains(value, "s3cr3t") {
			t.Fatalf("the value survived: %q", want)
		}
		sf = newStreamFilter(io.NopCloser(&chunkReader{data: data, sizes: sizes}), m, false)
		got, err = io.ReadAll(sf)
		if found := m.first(string(data)) != ""; found != (err != nil) {
			t.Fatalf("fail mode: found %v, err %v", found, err)
		}
		if err != nil && m.first(string(got)) != "" {
			t.Fatalf("fail mode passed a match on: %q", got)
		}
	})
}

// FuzzSecretApply: a request that carries a secret's placeholder (in any
// case) or value anywhere apply looks is blocked for a host the secret is
// not bound to, and changes nothing then; for the bound host no exact
// placeholder is left in a header.
func FuzzSecretApply(f *testing.F) {
	f.Add("/p?a=PH", "Authorization", "Bearer PH", "X", "v", true)
	f.Add("/", "Authorization", "Basic dTpQSA==", "Cookie", "a=PH", false)
	f.Add("/%50H", "X-PH", "1", "Y", "real-value-1234", false)
	f.Fuzz(func(t *testing.T, target, k1, v1, k2, v2 string, basicWrap bool) {
		set := newSecretSet(map[string]Secret{"T": {Value: "real-value-1234", Hosts: secretHosts(t, "api.example.com")}})
		ph := set.list[0].placeholder
		sub := func(s string) string { return strings.ReplaceAll(s, "PH", ph) }
		u, err := url.ParseRequestURI(sub(target))
		if err != nil {
			return
		}
		v1 = sub(v1)
		if basicWrap {
			v1 = "Basic " + base64.StdEncoding.EncodeToString([]byte(v1))
		}
		mk := func() *http.Request {
			uu := *u
			r := &http.Request{Method: "GET", URL: &uu, RequestURI: sub(target), Header: http.Header{}}
			r.Header[http.CanonicalHeaderKey(sub(k1))] = []string{v1}
			r.Header[http.CanonicalHeaderKey(sub(k2))] = append(r.Header[http.CanonicalHeaderKey(sub(k2))], sub(v2))
			return r
		}
		r := mk()
		before := dumpReq(r)
		ap := set.apply(r, "https", "other.example.com", 443)
		// What apply reads: the request as written, and the decoded
		// credentials of a Basic authorization header.
		seen := before
		for k, vs := range mk().Header {
			for _, v := range vs {
				if d, ok := decodeBasic(v); ok && isAuthHeader(k) {
					seen += "\n" + d
				}
			}
		}
		carries := strings.Contains(strings.ToLower(seen), strings.ToLower(ph)) || strings.Contains(seen, "real-value-1234")
		if carries && ap.blocked != "T" {
			t.Fatalf("not blocked: %s", before)
		}
		if ap.blocked != "" && dumpReq(r) != before {
			t.Fatal("a blocked request was changed")
		}
		if !carries && (ap.blocked != "" || ap.substituted) {
			t.Fatalf("clean request: %+v", ap)
		}
		r = mk()
		ap = set.apply(r, "https", "api.example.com", 443)
		if ap.blocked != "" {
			t.Fatalf("blocked for the bound host: %+v", ap)
		}
		for _, vs := range r.Header {
			for _, v := range vs {
				if strings.Contains(v, ph) {
					t.Fatalf("placeholder left in %q", v)
				}
			}
		}
	})
}

func dumpReq(r *http.Request) string {
	// Every key, valid field name or not (Header.Write skips invalid ones).
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(r.Method + " " + r.URL.String() + " " + r.RequestURI + "\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%q: %q\n", k, r.Header[k])
	}
	return b.String()
}

// FuzzDecodeBasic: decoding never panics and reverses encoding.
func FuzzDecodeBasic(f *testing.F) {
	f.Add("Basic dXNlcjpwYXNz", "user:pass")
	f.Add("basic   ", "")
	f.Add("Bearer x", "\x00")
	f.Fuzz(func(t *testing.T, header, cred string) {
		if d, ok := decodeBasic(header); ok {
			if got, ok2 := decodeBasic("Basic " + base64.StdEncoding.EncodeToString([]byte(d))); !ok2 || got != d {
				t.Fatalf("re-encoded %q decoded to %q", d, got)
			}
		}
		if got, ok := decodeBasic("Basic " + base64.StdEncoding.EncodeToString([]byte(cred))); !ok || got != cred {
			t.Fatalf("%q decoded to %q, %v", cred, got, ok)
		}
	})
}

// FuzzRequestTarget: whatever Host the guest sends, the target is either
// refused or a normalised host and a non-zero port that print and parse
// back to the same.
func FuzzRequestTarget(f *testing.F) {
	for _, s := range []string{"api.example.com", "API.example.com.:8443", "[::1]:80", "1.2.3.4:0", "evil@good", "a:b:c", "[fe80::1%eth0]", "", "::ffff:10.0.0.1"} {
		f.Add(s, uint16(443), "sni.example.com")
	}
	f.Fuzz(func(t *testing.T, host string, dport uint16, sni string) {
		fl := Flow{Dst: netip.AddrPortFrom(netip.MustParseAddr("203.0.113.7"), dport), SNI: sni}
		h, port, ok := fl.requestTarget(&http.Request{Host: host})
		if !ok {
			return
		}
		if n, ok := normalizeHost(h); !ok || n != h {
			t.Fatalf("host %q from %q is not normalised (%q)", h, host, n)
		}
		if port == 0 && dport != 0 {
			t.Fatalf("port 0 from %q", host)
		}
		if strings.ContainsAny(h, "@/?#% ") {
			t.Fatalf("host %q", h)
		}
	})
}
