package policy

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"
)

func secretHosts(t testing.TB, list string) []HostPattern {
	t.Helper()
	return settings(t, map[string]string{KeySecretPrefix + "X": list}).Secrets["X"]
}

func testRequest(target string, hdr ...string) *http.Request {
	r := &http.Request{Method: "GET", Header: http.Header{}, RequestURI: target}
	r.URL, _ = url.Parse(target)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

func TestSecretApply(t *testing.T) {
	set := newSecretSet(map[string]Secret{"TOKEN": {Value: "real-value-123", Hosts: secretHosts(t, "api.example.com")}})
	ph := set.list[0].placeholder
	req := testRequest
	r := req("/p?a="+ph, "Authorization", "token "+ph, "Cookie", "s="+ph+"; x=1")
	if ap := set.apply(r, "https", "api.example.com", 443); !ap.substituted || !ap.used || ap.blocked != "" {
		t.Fatalf("apply = %+v", ap)
	}
	if r.Header.Get("Authorization") != "token real-value-123" || r.Header.Get("Cookie") != "s=real-value-123; x=1" || r.URL.RawQuery != "a=real-value-123" {
		t.Fatalf("after apply: %v %q", r.Header, r.URL.RawQuery)
	}
	for _, r := range []*http.Request{
		req("/", "X", ph),
		req("/", "X", "real-value-123"),
		req("/?q=" + url.QueryEscape("real-value-123")),
		req("/" + ph),
		req("/%47ONDOLIN_SECRET_" + strings.TrimPrefix(ph, PlaceholderPrefix)),
		req("/", "Authorization", "Basic "+basic("u", "real-value-123")),
		req("/", "Authorization", "basic "+basic("u", strings.ToUpper(ph))),
		req("/", "X-"+ph, "1"),
	} {
		if ap := set.apply(r, "https", "other.example.com", 443); ap.blocked != "TOKEN" {
			t.Errorf("request %v %v not blocked for other host", r.URL, r.Header)
		}
	}
	// The host itself carrying the placeholder (lower-cased by DNS).
	if ap := set.apply(req("/"), "https", strings.ToLower(ph)+".evil.com", 443); ap.blocked != "TOKEN" {
		t.Error("placeholder in the host name not blocked")
	}
	// The method and the userinfo of an absolute target.
	r = req("http://u:" + ph + "@other.example.com/")
	if ap := set.apply(r, "https", "other.example.com", 443); ap.blocked != "TOKEN" {
		t.Error("placeholder in userinfo not blocked")
	}
	r = req("/")
	r.Method = ph
	if ap := set.apply(r, "https", "other.example.com", 443); ap.blocked != "TOKEN" {
		t.Error("placeholder as the method not blocked")
	}
	if got := set.redact("a " + ph + " b real-value-123 c " + strings.ToLower(ph)); strings.Contains(got, "real-value") || strings.Contains(strings.ToLower(got), strings.ToLower(ph)) {
		t.Errorf("redact = %q", got)
	}
}

func basic(u, p string) string {
	return base64.StdEncoding.EncodeToString([]byte(u + ":" + p))
}

// A secret is bound to a scheme and a port: HTTPS on 443 unless the
// annotation names http:// or a port.
func TestSecretSchemeBinding(t *testing.T) {
	cases := []struct {
		list   string
		scheme string
		host   string
		port   uint16
		want   bool
	}{
		{"api.example.com", "https", "api.example.com", 443, true},
		{"api.example.com", "http", "api.example.com", 80, false},
		{"api.example.com", "http", "api.example.com", 443, false},
		{"api.example.com", "https", "api.example.com", 8443, false},
		{"api.example.com:8443", "https", "api.example.com", 8443, true},
		{"api.example.com:8443", "http", "api.example.com", 8443, false},
		{"https://api.example.com", "https", "api.example.com", 443, true},
		{"HTTPS://api.example.com:444", "https", "api.example.com", 444, true},
		{"http://api.example.com", "http", "api.example.com", 80, true},
		{"http://api.example.com", "https", "api.example.com", 443, false},
		{"http://api.example.com", "http", "api.example.com", 8080, false},
		{"http://api.example.com:8080", "http", "api.example.com", 8080, true},
		{"http://*.example.com", "http", "a.example.com", 80, true},
		{"http://*.example.com", "http", "example.com", 80, false},
		{"http://[2001:db8::1]:8080", "http", "2001:db8::1", 8080, true},
		{"203.0.113.5", "https", "203.0.113.5", 443, true},
		{"a.example.com,http://b.example.com", "http", "b.example.com", 80, true},
		{"a.example.com,http://b.example.com", "http", "a.example.com", 80, false},
	}
	for _, tc := range cases {
		sec := &secret{hosts: secretHosts(t, tc.list)}
		if got := sec.allowedFor(tc.scheme, tc.host, tc.port); got != tc.want {
			t.Errorf("%q allowedFor(%s://%s:%d) = %v, want %v", tc.list, tc.scheme, tc.host, tc.port, got, tc.want)
		}
	}
	for _, bad := range []string{"ftp://a.example.com", "https://", "https://a.example.com/path", "http://u@a.example.com", "a.example.com?x", "http://http://a.example.com", "://a.example.com"} {
		if _, err := parseRules(map[string]string{KeySecretPrefix + "X": bad}); err == nil {
			t.Errorf("secret hosts %q accepted", bad)
		}
	}
}

func TestBase64Core(t *testing.T) {
	const v = "s3cr3t-VALUE-0123456789"
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		raw := enc.WithPadding(base64.NoPadding)
		for pre := 0; pre < 7; pre++ {
			for suf := 0; suf < 4; suf++ {
				blob := enc.EncodeToString([]byte(strings.Repeat("u", pre) + v + strings.Repeat(":", suf)))
				if core := base64Core(raw, v, pre%3); len(core) < 16 || !strings.Contains(blob, core) {
					t.Errorf("core %q (align %d) not in %q", core, pre%3, blob)
				}
			}
		}
	}
}

// filterAll runs src through a stream filter, reading in the given way.
func filterAll(m *matcher, src string, replace bool, wrap func(io.Reader) io.Reader) (string, error) {
	sf := newStreamFilter(io.NopCloser(wrap(strings.NewReader(src))), m, replace)
	b, err := io.ReadAll(sf)
	return string(b), err
}

func TestStreamFilter(t *testing.T) {
	set := newSecretSet(map[string]Secret{
		"A": {Value: "alpha-secret-value", Hosts: secretHosts(t, "a.example.com")},
		"B": {Value: "alpha-secret-value-longer", Hosts: secretHosts(t, "b.example.com")},
	})
	pa, pb := set.list[0].placeholder, set.list[1].placeholder
	m := set.back
	in := "x alpha-secret-value y alpha-secret-value-longer z " + base64.StdEncoding.EncodeToString([]byte("user:alpha-secret-value")) + " alpha-secret"
	want := m.replace(in)
	if strings.Contains(want, "alpha-secret-value") || !strings.Contains(want, "x "+pa+" y "+pb+" z ") || !strings.HasSuffix(want, " alpha-secret") {
		t.Fatalf("replace = %q", want)
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
	}
	for name, wrap := range readers {
		got, err := filterAll(m, in, true, wrap)
		if err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", name, got, err, want)
		}
	}
	// Fail mode: nothing of the match is passed on.
	sf := newStreamFilter(io.NopCloser(iotest.OneByteReader(strings.NewReader("0123456789 alpha-secret-value tail"))), m, false)
	var named string
	sf.onMatch = func(n string) error { named = n; return nil }
	b, err := io.ReadAll(sf)
	if err != errSecretInStream || named != "A" || strings.Contains(string(b), "alpha-secret-value") || strings.Contains(string(b), "tail") {
		t.Errorf("fail mode: %q %v %q", b, err, named)
	}
	// Large random bodies with values at random places, random chunking.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20; i++ {
		var sb strings.Builder
		for sb.Len() < 200<<10 {
			switch rng.IntN(50) {
			case 0:
				sb.WriteString("alpha-secret-value")
			case 1:
				sb.WriteString("alpha-secret-value-longer")
			default:
				sb.WriteByte(byte('a' + rng.IntN(26)))
			}
		}
		src := sb.String()
		got, err := filterAll(m, src, true, func(r io.Reader) io.Reader { return &randReader{r: r, rng: rng} })
		if err != nil || got != m.replace(src) || strings.Contains(got, "alpha-secret-value") {
			t.Fatalf("random body %d differs (err %v)", i, err)
		}
	}
}

type randReader struct {
	r   io.Reader
	rng *rand.Rand
}

func (r *randReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1+r.rng.IntN(len(p))]
	}
	return r.r.Read(p)
}

// The leak matcher finds placeholders in any case and value forms, only
// for secrets not bound to the target.
func TestLeakMatcher(t *testing.T) {
	set := newSecretSet(map[string]Secret{"T": {Value: "the-real-value-42", Hosts: secretHosts(t, "api.example.com")}})
	ph := set.list[0].placeholder
	if m := set.leakMatcher("https", "api.example.com", 443); m != nil {
		t.Fatal("a leak matcher for the bound host")
	}
	m := set.leakMatcher("https", "other.example.com", 443)
	for _, s := range []string{ph, strings.ToUpper(ph), "x=the-real-value-42", base64.StdEncoding.EncodeToString([]byte("u:the-real-value-42")), `{"k":"the-real-value-42"}`} {
		if m.first(s) != "T" {
			t.Errorf("leak not found in %q", s)
		}
	}
	if m.first("GONDOLIN_SECRET_ nothing here") != "" {
		t.Error("false match")
	}
	// The bound host over plain HTTP is another target.
	if set.leakMatcher("http", "api.example.com", 80) == nil {
		t.Error("http to an https-bound host is not guarded")
	}
}

func gzipped(s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	io.WriteString(w, s)
	w.Close()
	return b.Bytes()
}

// BenchmarkRedactStream measures the redactor on a body with no secret in
// it (the common case): one secret's forms, 32 KiB reads.
func BenchmarkRedactStream(b *testing.B) {
	set := newSecretSet(map[string]Secret{"T": {Value: "bench-REAL-value-0123456789abcdef"}})
	data := bytes.Repeat([]byte("The quick brown fox jumps over the lazy dog. 0123456789\n"), 1<<14)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sf := newStreamFilter(io.NopCloser(bytes.NewReader(data)), set.back, true)
		if _, err := io.Copy(io.Discard, sf); err != nil {
			b.Fatal(err)
		}
	}
}
