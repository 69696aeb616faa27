package policy

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"
)

// seen is what a recording upstream received.
type seen struct {
	Host    string
	Header  http.Header
	Query   string
	Body    string
	Trailer http.Header
}

// recorder is an upstream that records every request and echoes its
// Authorization header back in every way a server can: a response header,
// a cookie, a redirect, the body (byte by byte, gzip when offered) and a
// trailer.
type recorder struct {
	mu   sync.Mutex
	reqs []seen
	srv  *httptest.Server
}

func (rc *recorder) all() string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	b, _ := json.Marshal(rc.reqs)
	return string(b)
}

func (rc *recorder) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.reqs)
}

func (rc *recorder) last() seen {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.reqs) == 0 {
		return seen{}
	}
	return rc.reqs[len(rc.reqs)-1]
}

func (rc *recorder) handle(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, seen{Host: r.Host, Header: r.Header.Clone(), Query: r.URL.RawQuery, Body: string(body), Trailer: r.Trailer.Clone()})
	rc.mu.Unlock()
	auth := r.Header.Get("Authorization")
	switch r.URL.Path {
	case "/redirect":
		w.Header().Set("Location", "https://api.example.com/cb?token="+auth)
		w.WriteHeader(http.StatusFound)
		return
	case "/hints":
		w.Header().Set("Link", "</x?t="+auth+">; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "ok")
		return
	case "/br":
		w.Header().Set("Content-Encoding", "br")
		io.WriteString(w, auth)
		return
	}
	w.Header().Set("X-Echo", auth)
	w.Header().Set("X-Echo-"+strings.ReplaceAll(strings.TrimPrefix(auth, "Bearer "), "-", ""), "1")
	http.SetCookie(w, &http.Cookie{Name: "s", Value: base64.StdEncoding.EncodeToString([]byte(auth))})
	w.Header().Set("Trailer", "X-Trailer-Echo")
	out := "auth=" + auth + "\n" + "query=" + r.URL.RawQuery + "\n" + "b64=" + base64.StdEncoding.EncodeToString([]byte("pre"+auth)) + "\n"
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Encoding", "gzip")
		gz := gzip.NewWriter(w)
		io.WriteString(gz, out)
		gz.Close()
	} else {
		for i := 0; i < len(out); i++ {
			w.Write([]byte{out[i]})
			w.(http.Flusher).Flush()
		}
	}
	w.Header().Set("X-Trailer-Echo", auth)
}

// newRecorder starts a recording upstream (TLS or plain) and routes
// ip:port to it.
func newRecorder(t *testing.T, e *env, ip netip.Addr, port uint16, useTLS bool) *recorder {
	rc := &recorder{}
	rc.srv = httptest.NewUnstartedServer(http.HandlerFunc(rc.handle))
	if useTLS {
		rc.srv.EnableHTTP2 = true
		rc.srv.TLS = &tls.Config{Certificates: []tls.Certificate{e.ca.leaf(t, "api.example.com", "other.example.com", ip.String())}}
		rc.srv.StartTLS()
	} else {
		rc.srv.Start()
	}
	t.Cleanup(rc.srv.Close)
	e.dialer.mu.Lock()
	e.dialer.routes["tcp "+netip.AddrPortFrom(ip, port).String()] = srvAddr(rc.srv)
	e.dialer.mu.Unlock()
	return rc
}

// pinnedClient is a guest client whose every connection goes to dst,
// whatever the URL says, one connection at a time (so keep-alive reuses
// it): the guest chooses the address, the URL chooses the Host.
func (e *env) pinnedClient(dst netip.AddrPort, h2 bool) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.n.CACertPEM())
	tr := &http.Transport{
		DialContext:        func(ctx context.Context, _, _ string) (net.Conn, error) { return e.g.dialTCP(ctx, dst) },
		TLSClientConfig:    &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2:  h2,
		MaxConnsPerHost:    1,
		DisableCompression: true,
	}
	if !h2 {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func TestSecrets(t *testing.T) {
	const real = "s3cr3t-VALUE-0123456789"
	s := settings(t, map[string]string{
		KeyAllow:                  "api.example.com,other.example.com",
		KeySecretPrefix + "TOKEN": "api.example.com",
	})
	e := newEnv(t, s.Config(map[string]string{"TOKEN": real}))
	rec := newRecorder(t, e, apiIP, 443, true)
	ph, ok := e.n.Placeholder("TOKEN")
	if !ok || !strings.HasPrefix(ph, PlaceholderPrefix) || len(ph) != len(PlaceholderPrefix)+48 || strings.Contains(ph, real) {
		t.Fatalf("placeholder %q", ph)
	}
	if e.n.Placeholders()["TOKEN"] != ph {
		t.Fatal("Placeholders() disagrees with Placeholder()")
	}
	c := e.g.client(e.n.CACertPEM(), true)

	req, _ := http.NewRequest("GET", "https://api.example.com/echo?key="+ph+"&x=1", nil)
	req.Header.Set("Authorization", "Bearer "+ph)
	req.Header.Set("X-Api-Key", "pre-"+ph+"-post")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	got := rec.last()
	if got.Header.Get("Authorization") != "Bearer "+real || got.Header.Get("X-Api-Key") != "pre-"+real+"-post" || got.Query != "key="+real+"&x=1" {
		t.Fatalf("substitution: %+v", got)
	}

	// Basic auth: decoded, substituted, re-encoded.
	req, _ = http.NewRequest("GET", "https://api.example.com/echo", nil)
	req.SetBasicAuth("user", ph)
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	up := &http.Request{Header: rec.last().Header}
	if u, pw, ok := up.BasicAuth(); !ok || u != "user" || pw != real {
		t.Fatalf("basic auth upstream: %q %q %v", u, pw, ok)
	}

	// The placeholder, or the real value, bound for another host: 403.
	for _, hdr := range []string{"Bearer " + ph, "Bearer " + real, "Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+ph))} {
		req, _ = http.NewRequest("GET", "https://other.example.com/echo", nil)
		req.Header.Set("Authorization", hdr)
		resp, err = c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "TOKEN") || strings.Contains(body, real) || strings.Contains(body, ph) {
			t.Fatalf("secret to other host (%s...): %d %q", hdr[:8], resp.StatusCode, body)
		}
	}
	for _, u := range []string{"https://other.example.com/echo?k=" + ph, "http://other.example.com/" + ph + "/x"} {
		resp, err = c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("placeholder in %s to other host: %d", u, resp.StatusCode)
		}
	}
	// Without secrets, other.example.com is fine.
	resp, err = c.Get("https://other.example.com/echo")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("plain request to other host: %d", resp.StatusCode)
	}
	r, ok := e.findAudit(func(r AuditRecord) bool { return r.Decision == Denied && strings.Contains(r.Reason, "TOKEN") })
	if !ok || r.Host != "other.example.com" {
		t.Fatalf("no audit for the blocked secret: %+v", r)
	}
	assertNoSecrets(t, e, real, ph)
}

// Issue 14 finding 2: in mode open the guest opens a keep-alive connection
// to an address of its choosing (the attacker's), sends one request with
// the bound host's name and no secret, then one with the placeholder. The
// second must go to an address checked for the bound host, never on the
// pooled connection to the attacker.
func TestSecretNotSentOnPooledConnection(t *testing.T) {
	const real = "pooled-REAL-value-987654321"
	for _, tc := range []struct {
		name   string
		secret string
		tls    bool
		h2     bool
	}{
		{"http", "http://api.example.com", false, false},
		{"https", "api.example.com", true, false},
		{"h2", "api.example.com", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := settings(t, map[string]string{
				KeyMode:                   "open",
				KeySecretPrefix + "TOKEN": tc.secret,
			})
			e := newEnv(t, s.Config(map[string]string{"TOKEN": real}))
			port := uint16(80)
			scheme := "http"
			if tc.tls {
				port, scheme = 443, "https"
			}
			good := newRecorder(t, e, apiIP, port, tc.tls)
			// The attacker even holds a certificate for the bound name.
			attacker := newRecorder(t, e, otherIP, port, tc.tls)
			ph, _ := e.n.Placeholder("TOKEN")
			c := e.pinnedClient(netip.AddrPortFrom(otherIP, port), tc.h2)
			for i, auth := range []string{"", "Bearer " + ph, "Bearer " + ph} {
				req, _ := http.NewRequest("GET", scheme+"://api.example.com/echo", nil)
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				readBody(t, resp)
			}
			if strings.Contains(attacker.all(), real) {
				t.Fatalf("the attacker's address received the real value: %s", attacker.all())
			}
			if attacker.count() != 1 {
				t.Fatalf("the attacker should see only the first request, saw %d", attacker.count())
			}
			if good.count() != 2 || good.last().Header.Get("Authorization") != "Bearer "+real {
				t.Fatalf("the bound host should get both secret requests: %s", good.all())
			}
		})
	}
}

// Issue 14 finding 7b: what comes back from a bound host that echoes the
// value carries the placeholder instead, in headers, cookies, redirects,
// bodies (streamed byte by byte and gzip) and trailers.
func TestSecretEchoRedacted(t *testing.T) {
	const real = "echoed-REAL-value-55555"
	s := settings(t, map[string]string{
		KeyAllow:                  "api.example.com,other.example.com",
		KeySecretPrefix + "TOKEN": "api.example.com",
	})
	e := newEnv(t, s.Config(map[string]string{"TOKEN": real}))
	newRecorder(t, e, apiIP, 443, true)
	ph, _ := e.n.Placeholder("TOKEN")
	for _, h2 := range []bool{false, true} {
		c := e.g.client(e.n.CACertPEM(), h2)
		for _, tc := range []struct{ path, auth, enc string }{
			{"/echo", "Bearer " + ph, ""},
			{"/echo", "Bearer " + ph, "gzip"},
			{"/echo", "Basic " + basic("user", ph), ""},
			{"/redirect", "Bearer " + ph, ""},
		} {
			req, _ := http.NewRequest("GET", "https://api.example.com"+tc.path+"?k="+ph, nil)
			req.Header.Set("Authorization", tc.auth)
			if tc.enc != "" {
				req.Header.Set("Accept-Encoding", tc.enc)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			var all strings.Builder
			fmt.Fprintf(&all, "%v\n%v\n%s", resp.Header, resp.Trailer, body)
			if strings.Contains(all.String(), real) || strings.Contains(all.String(), base64.StdEncoding.EncodeToString([]byte(real))[:16]) {
				t.Fatalf("h2=%v %s %s: the guest got the real value back:\n%s", h2, tc.path, tc.auth[:6], all.String())
			}
			if tc.path == "/echo" && (resp.Header.Get("X-Echo") != tc.auth || !strings.Contains(body, "auth="+tc.auth+"\n") || resp.Trailer.Get("X-Trailer-Echo") != tc.auth) {
				t.Fatalf("h2=%v %s: the echo should carry the placeholder:\n%s", h2, tc.auth[:6], all.String())
			}
			if tc.path == "/redirect" && !strings.Contains(resp.Header.Get("Location"), ph) {
				t.Fatalf("redirect: %v", resp.Header)
			}
		}
		// 103 Early Hints bypass ModifyResponse in ReverseProxy.
		var hints []string
		var hmu sync.Mutex
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				hmu.Lock()
				hints = append(hints, fmt.Sprint(code, h))
				hmu.Unlock()
				return nil
			},
		})
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://api.example.com/hints", nil)
		req.Header.Set("Authorization", "Bearer "+ph)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		hmu.Lock()
		got := strings.Join(hints, "\n")
		hmu.Unlock()
		if strings.Contains(got, real) || !strings.Contains(got, ph) {
			t.Fatalf("h2=%v early hints: %q", h2, got)
		}
		// An encoding the redactor cannot read is refused.
		req, _ = http.NewRequest("GET", "https://api.example.com/br", nil)
		req.Header.Set("Authorization", "Bearer "+ph)
		resp, err = c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if body := readBody(t, resp); resp.StatusCode != http.StatusBadGateway || strings.Contains(body, real) {
			t.Fatalf("br from a bound host: %d %q", resp.StatusCode, body)
		}
	}
	assertNoSecrets(t, e, real, ph)
}

// A host the secret is not bound to that answers with the value (it got it
// some other way) has the response cut; lengths stay intact otherwise.
func TestSecretInResponseFromOtherHostCut(t *testing.T) {
	const real = "leaked-REAL-value-777777"
	s := settings(t, map[string]string{
		KeyAllow:                  "api.example.com,other.example.com",
		KeySecretPrefix + "TOKEN": "api.example.com",
	})
	e := newEnv(t, s.Config(map[string]string{"TOKEN": real}))
	leaky := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/clean" {
			io.WriteString(w, "nothing to see")
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, strings.Repeat("x", 100000)+"value="+real+" tail")
	}))
	leaky.TLS = &tls.Config{Certificates: []tls.Certificate{e.ca.leaf(t, "other.example.com")}}
	leaky.StartTLS()
	t.Cleanup(leaky.Close)
	e.dialer.mu.Lock()
	e.dialer.routes["tcp "+otherIP.String()+":443"] = srvAddr(leaky)
	e.dialer.mu.Unlock()
	c := e.g.client(e.n.CACertPEM(), false)
	resp, err := c.Get("https://other.example.com/leak")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), real) || strings.Contains(string(b), "tail") {
		t.Fatalf("the value came back from another host (%d bytes)", len(b))
	}
	resp, err = c.Get("https://other.example.com/clean")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); body != "nothing to see" || resp.ContentLength != int64(len(body)) {
		t.Fatalf("clean response: %q %d", body, resp.ContentLength)
	}
	if _, ok := e.findAudit(func(r AuditRecord) bool { return r.Decision == Denied && strings.Contains(r.Reason, "response") }); !ok {
		t.Fatal("no audit for the cut response")
	}
}

// Issue 14 finding 7c: the body and trailers of a request to a host the
// secret is not bound to are scanned for the placeholder and the value;
// a find ends the request before the match leaves.
func TestSecretInRequestBodyBlocked(t *testing.T) {
	const real = "body-REAL-value-31415926"
	s := settings(t, map[string]string{
		KeyAllow:                  "api.example.com,other.example.com",
		KeySecretPrefix + "TOKEN": "api.example.com",
	})
	e := newEnv(t, s.Config(map[string]string{"TOKEN": real}))
	other := newRecorder(t, e, otherIP, 443, true)
	bound := newRecorder(t, e, apiIP, 443, true)
	ph, _ := e.n.Placeholder("TOKEN")
	for _, h2 := range []bool{false, true} {
		c := e.g.client(e.n.CACertPEM(), h2)
		for _, body := range []string{
			"token=" + ph,
			strings.Repeat("a", 200<<10) + strings.ToUpper(ph),
			`{"k":"` + real + `"}`,
			strings.Repeat("b", 100<<10) + base64.StdEncoding.EncodeToString([]byte("u:"+real)),
		} {
			resp, err := c.Post("https://other.example.com/upload", "text/plain", strings.NewReader(body))
			if err == nil {
				readBody(t, resp)
				if resp.StatusCode != http.StatusForbidden {
					t.Errorf("h2=%v body with a secret to another host: %d", h2, resp.StatusCode)
				}
			}
		}
		// Trailers (chunked HTTP/1.1, or HTTP/2).
		req, _ := http.NewRequest("POST", "https://other.example.com/upload", io.MultiReader(strings.NewReader("abc")))
		req.Trailer = http.Header{"X-T": {ph}}
		req.ContentLength = -1
		if resp, err := c.Do(req); err == nil {
			readBody(t, resp)
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("h2=%v trailer with a secret to another host: %d", h2, resp.StatusCode)
			}
		}
		// A body to the bound host passes as it is.
		resp, err := c.Post("https://api.example.com/upload", "text/plain", strings.NewReader("token="+ph))
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if resp.StatusCode != 200 || bound.last().Body != "token="+ph {
			t.Fatalf("body to the bound host: %d %q", resp.StatusCode, bound.last().Body)
		}
	}
	low := strings.ToLower(other.all())
	if strings.Contains(other.all(), real) || strings.Contains(low, strings.ToLower(ph)) || strings.Contains(other.all(), base64.StdEncoding.EncodeToString([]byte("u:" + real))[:12]) {
		t.Fatalf("another host received the secret: %.300s", other.all())
	}
	if _, ok := e.findAudit(func(r AuditRecord) bool {
		return r.Decision == Denied && strings.Contains(r.Reason, "body carries secret TOKEN")
	}); !ok {
		t.Fatal("no audit for the blocked body")
	}
	assertNoSecrets(t, e, real, ph)
}

// Issue 14 finding 7a: a secret named without a scheme goes over HTTPS
// only; http:// must be asked for, and then HTTPS does not get it.
func TestSecretSchemeEnforced(t *testing.T) {
	const real = "scheme-REAL-value-2718281"
	for _, tc := range []struct {
		secret          string
		httpOK, httpsOK bool
	}{
		{"api.example.com", false, true},
		{"http://api.example.com", true, false},
		{"https://api.example.com,http://api.example.com", true, true},
	} {
		s := settings(t, map[string]string{
			KeyAllow:                  "api.example.com",
			KeySecretPrefix + "TOKEN": tc.secret,
		})
		e := newEnv(t, s.Config(map[string]string{"TOKEN": real}))
		plain := newRecorder(t, e, apiIP, 80, false)
		tlsRec := newRecorder(t, e, apiIP, 443, true)
		ph, _ := e.n.Placeholder("TOKEN")
		c := e.g.client(e.n.CACertPEM(), false)
		for _, scheme := range []string{"http", "https"} {
			req, _ := http.NewRequest("GET", scheme+"://api.example.com/echo", nil)
			req.Header.Set("Authorization", "Bearer "+ph)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
			want := tc.httpOK
			if scheme == "https" {
				want = tc.httpsOK
			}
			if got := resp.StatusCode == 200; got != want {
				t.Errorf("%q: %s request with the placeholder: %d", tc.secret, scheme, resp.StatusCode)
			}
		}
		if !tc.httpOK && strings.Contains(plain.all(), real) || !tc.httpsOK && strings.Contains(tlsRec.all(), real) {
			t.Errorf("%q: the value went over a scheme it is not bound to", tc.secret)
		}
	}
}

// The guest's own keep-alive connection carrying requests for different
// hosts: each is checked and routed on its own.
func TestSecretHostSwitchOnGuestConnection(t *testing.T) {
	const real = "switch-REAL-value-1618033"
	s := settings(t, map[string]string{
		KeyAllow:                  "api.example.com,other.example.com",
		KeySecretPrefix + "TOKEN": "api.example.com",
	})
	e := newEnv(t, s.Config(map[string]string{"TOKEN": real}))
	bound := newRecorder(t, e, apiIP, 443, true)
	other := newRecorder(t, e, otherIP, 443, true)
	ph, _ := e.n.Placeholder("TOKEN")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ip, err := e.g.lookup("api.example.com")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := e.g.dialTCP(ctx, netip.AddrPortFrom(ip, 443))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.n.CACertPEM())
	conn := tls.Client(raw, &tls.Config{ServerName: "api.example.com", RootCAs: pool, NextProtos: []string{"http/1.1"}})
	defer conn.Close()
	br := bufio.NewReader(conn)
	for _, host := range []string{"api.example.com", "other.example.com", "api.example.com", "other.example.com"} {
		fmt.Fprintf(conn, "GET /echo HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", host, ph)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if want := host == "api.example.com"; (resp.StatusCode == 200) != want {
			t.Fatalf("Host %s on the guest's connection: %d", host, resp.StatusCode)
		}
	}
	if other.count() != 0 || bound.count() != 2 {
		t.Fatalf("bound saw %d, other saw %d", bound.count(), other.count())
	}
}

// A short value (under 8 bytes) is replaced in what a bound host sends
// back, but does not cut ordinary responses from other hosts.
func TestSecretShortValue(t *testing.T) {
	const real = "z!q" // nothing a placeholder can contain
	s := settings(t, map[string]string{
		KeyAllow:                  "api.example.com,other.example.com",
		KeySecretPrefix + "TOKEN": "api.example.com",
	})
	e := newEnv(t, s.Config(map[string]string{"TOKEN": real}))
	newRecorder(t, e, apiIP, 443, true)
	newRecorder(t, e, otherIP, 443, true)
	ph, _ := e.n.Placeholder("TOKEN")
	c := e.g.client(e.n.CACertPEM(), false)
	req, _ := http.NewRequest("GET", "https://api.example.com/echo", nil)
	req.Header.Set("Authorization", "Bearer "+ph)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); strings.Contains(body, real) || !strings.Contains(body, ph) {
		t.Fatalf("bound host echo: %q", body)
	}
	req, _ = http.NewRequest("GET", "https://other.example.com/echo", nil)
	req.Header.Set("Authorization", "xz!qx")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != 200 || !strings.Contains(body, "auth=xz!qx") {
		t.Fatalf("other host with ordinary text: %d %q", resp.StatusCode, body)
	}
}

// With secrets configured, streams still flow: a WebSocket echo and an
// event stream are not held back waiting for more data.
func TestSecretStreamsFlow(t *testing.T) {
	s := settings(t, map[string]string{
		KeyAllow:                  "api.example.com,other.example.com",
		KeySecretPrefix + "TOKEN": "api.example.com",
	})
	e := newEnv(t, s.Config(map[string]string{"TOKEN": "stream-REAL-value-4242"}))
	for _, host := range []string{"api.example.com", "other.example.com"} {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		raw, err := e.g.dialHost(ctx, host+":443")
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(e.n.CACertPEM())
		conn := tls.Client(raw, &tls.Config{ServerName: host, RootCAs: pool, NextProtos: []string{"http/1.1"}})
		defer conn.Close()
		io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: "+host+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("%s upgrade: %v %v", host, resp, err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for _, msg := range []string{"hello", "world"} {
			io.WriteString(conn, msg)
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
				t.Fatalf("%s echo %q: %q %v", host, msg, buf, err)
			}
		}
	}
	c := e.g.client(e.n.CACertPEM(), false)
	resp, err := c.Get("https://api.example.com/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first event: %q %v", line, err)
	}
	close(e.up.streamRelease)
}
