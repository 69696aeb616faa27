package policy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"net/textproto"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// serveHTTP is the handler for every decrypted or plain guest request: it
// carries out DecideRequest.
func (n *Network) serveHTTP(w http.ResponseWriter, r *http.Request) {
	f, _ := r.Context().Value(flowKey{}).(*flow)
	if f == nil {
		http.Error(w, "gondolin: no flow", http.StatusInternalServerError)
		return
	}
	normalizeRequest(r)
	d := n.policy.DecideRequest(r.Context(), n.facts, f.desc(), r)
	rec := AuditRecord{Protocol: d.Scheme, Host: d.Host, Port: d.Port, Method: r.Method, Path: r.URL.Path, Dest: f.dst.String()}
	if !d.Allow {
		n.denyHTTP(w, rec, &denial{d.Status, d.Reason, d.Hint})
		return
	}
	ap := n.secrets.substitute(r, d.use)
	reason := d.Reason
	if ap.substituted {
		reason += "; secrets substituted"
	}
	n.audit(rec.allow(reason))

	target := hostPort(d.Host, d.Port)
	st := &reqState{scheme: d.Scheme, target: target, addrs: d.Addrs, port: d.Port, rec: rec}
	if len(n.secrets.list) > 0 {
		n.guardSecrets(r, st, ap)
	}
	r = r.WithContext(context.WithValue(r.Context(), reqStateKey{}, st))
	r.URL.Scheme = d.Scheme
	r.URL.Host = target
	f.reverseProxy().ServeHTTP(w, r)
}

func (n *Network) denyHTTP(w http.ResponseWriter, rec AuditRecord, d *denial) {
	n.audit(rec.deny(d.reason))
	body := fmt.Sprintf("gondolin: %s %s://%s%s denied: %s.\n", rec.Method, rec.Protocol, hostPort(rec.Host, rec.Port), rec.Path, d.reason)
	if d.hint != "" {
		body += d.hint + "\n"
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Gondolin-Denied", "1")
	w.WriteHeader(d.status)
	io.WriteString(w, n.secrets.redact(body))
}

// reqState is what serveHTTP decided about one request, for the upstream
// transport and the response.
type reqState struct {
	scheme string
	target string
	// addrs are the addresses checked for this request's host: its
	// connection is dialled to one of them, and only requests checked to
	// the same addresses share it.
	addrs []netip.Addr
	port  uint16
	rec   AuditRecord

	// bound: a secret may be sent to this target, so its responses are
	// redacted in full (and must come back in an encoding that can be).
	bound bool
	// back replaces value forms in what comes back.
	back *matcher
	// blocked is the secret a request body or trailer carried to a host
	// it is not bound to.
	blocked atomic.Pointer[string]
}

type reqStateKey struct{}

func stateOf(ctx context.Context) *reqState {
	st, _ := ctx.Value(reqStateKey{}).(*reqState)
	return st
}

// key names the upstream transport a request may use: the same scheme,
// host:port and checked addresses.
func (st *reqState) key() string {
	// Sorted, so that a resolver's changing order does not churn
	// transports; the set is what was checked.
	as := make([]string, len(st.addrs))
	for i, a := range st.addrs {
		as[i] = a.String()
	}
	sort.Strings(as)
	return st.scheme + "://" + st.target + " " + strings.Join(as, " ")
}

// guardSecrets arranges the secret checks that cannot be made on the
// headers: the request body and trailers are scanned for secrets not
// bound to the target (a find ends the request before the match leaves
// and is audited), and what comes back is redacted (modifyResponse).
func (n *Network) guardSecrets(r *http.Request, st *reqState, ap applied) {
	host, _, _ := net.SplitHostPort(st.target)
	st.bound = n.secrets.boundTo(st.scheme, host, st.port)
	pats := ap.echo
	back := n.secrets.backLong
	if st.bound {
		back = n.secrets.back
	}
	if back != nil {
		pats = append(pats, back.pats...)
	}
	st.back = newMatcher(pats)
	if st.bound {
		// The transport asks for gzip and decodes it itself, so the
		// body comes back in a form the redactor can read.
		r.Header.Del("Accept-Encoding")
	}
	leak := n.secrets.leakMatcher(st.scheme, host, st.port)
	if leak == nil || r.Body == nil || r.Body == http.NoBody {
		return
	}
	block := func(name, where string) error {
		if st.blocked.CompareAndSwap(nil, &name) {
			n.audit(st.rec.deny("the request " + where + " carries secret " + name + ", which may not be sent to " + st.scheme + "://" + st.target))
		}
		return errSecretInStream
	}
	in := r.Trailer
	sf := newStreamFilter(r.Body, leak, false)
	sf.onMatch = func(name string) error { return block(name, "body") }
	sf.atEOF = func() error {
		for _, t := range []http.Header{in, r.Trailer} {
			for k, vs := range t {
				if name := leak.first(k + ": " + strings.Join(vs, "\n")); name != "" {
					return block(name, "trailer")
				}
			}
		}
		return nil
	}
	r.Body = sf
}

// maxFlowUpstreams bounds the transports a flow keeps (one per checked
// destination); past it the oldest is dropped with its idle connections.
const maxFlowUpstreams = 8

// upstreamSet is a flow's upstream transports by reqState.key.
type upstreamSet struct {
	m     map[string]*http.Transport
	order []string
}

// RoundTrip sends a request on a connection of the transport for its
// checked destination: a connection dialled for another host's check, or
// for other addresses, is never reused.
func (f *flow) RoundTrip(req *http.Request) (*http.Response, error) {
	st := stateOf(req.Context())
	if st == nil || len(st.addrs) == 0 {
		return nil, errors.New("policy: the request's destination was not checked")
	}
	if st.back != nil {
		// Informational responses (103 Early Hints) reach the guest from
		// ReverseProxy's own trace hook, without ModifyResponse; a hook
		// added here runs first and redacts their header in place.
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			Got1xxResponse: func(_ int, h textproto.MIMEHeader) error {
				redactHeader(http.Header(h), st.back)
				return nil
			},
		}))
	}
	return f.transportFor(st).RoundTrip(req)
}

func (f *flow) transportFor(st *reqState) *http.Transport {
	key := st.key()
	f.mu.Lock()
	defer f.mu.Unlock()
	u := &f.upstream
	if t := u.m[key]; t != nil {
		return t
	}
	if u.m == nil {
		u.m = map[string]*http.Transport{}
	}
	if len(u.order) >= maxFlowUpstreams {
		old := u.order[0]
		u.order = u.order[1:]
		u.m[old].CloseIdleConnections()
		delete(u.m, old)
	}
	n := f.n
	addrs, port := st.addrs, st.port
	t := &http.Transport{
		// The dial ignores the address the transport asks for: it is
		// always one of the addresses checked for this key.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, dialTimeout)
			defer cancel()
			c, _, err := n.dialAddrs(ctx, addrs, port)
			return c, err
		},
		TLSClientConfig:       &tls.Config{RootCAs: n.cfg.RootCAs, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   dialTimeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
		ExpectContinueTimeout: time.Second,
	}
	u.m[key] = t
	u.order = append(u.order, key)
	return t
}

// reverseProxy is the flow's upstream side: its own transports, so
// upstream connections live and die with the guest's connection.
func (f *flow) reverseProxy() *httputil.ReverseProxy {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.proxy != nil {
		return f.proxy
	}
	n := f.n
	f.proxy = &httputil.ReverseProxy{
		// The request URL is set by serveHTTP; Rewrite mode strips
		// X-Forwarded-* and keeps the guest's Host header.
		Rewrite:        func(*httputil.ProxyRequest) {},
		Transport:      f,
		FlushInterval:  -1,
		ErrorLog:       log.New(redactWriter{n}, "", 0),
		ErrorHandler:   f.proxyError,
		ModifyResponse: n.modifyResponse,
	}
	return f.proxy
}

// modifyResponse drops HTTP/3 hints (QUIC would bypass the mediation) and,
// when the container has secrets, turns every value form in what comes
// back into its placeholder: header names and values, the body (streamed)
// and trailers. From a target a secret is bound to, the body must come in
// an encoding the redactor reads (identity, or gzip the transport decoded)
// and its length is dropped since redaction changes it. From any other
// target a value form cuts the response instead, keeping lengths intact:
// no value should ever be there.
func (n *Network) modifyResponse(resp *http.Response) error {
	resp.Header.Del("Alt-Svc")
	st := stateOf(resp.Request.Context())
	if st == nil || st.back == nil {
		return nil
	}
	redactHeader(resp.Header, st.back)
	// Trailer names are announced before the body; values come at its end.
	redactHeader(resp.Trailer, st.back)
	if resp.Body == nil || resp.Body == http.NoBody {
		return nil
	}
	cut := func(name string) error {
		n.audit(st.rec.deny("the response from " + st.scheme + "://" + st.target + " carried secret " + name + "; cut"))
		return errSecretInStream
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// An upgraded stream has its own framing: a match cuts it.
		rwc, ok := resp.Body.(io.ReadWriteCloser)
		if !ok {
			return errors.New("policy: upgraded response body is not writable")
		}
		sf := newStreamFilter(rwc, st.back, false)
		sf.onMatch = cut
		resp.Body = &rwFilter{streamFilter: sf, w: rwc}
		return nil
	}
	replace := st.bound
	if replace {
		if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
			return fmt.Errorf("policy: %s://%s answered with Content-Encoding %q, which the secret redactor cannot read", st.scheme, st.target, ce)
		}
		resp.Header.Del("Content-Length")
		resp.ContentLength = -1
	}
	sf := newStreamFilter(resp.Body, st.back, replace)
	sf.onMatch = cut
	sf.atEOF = func() error {
		redactHeader(resp.Trailer, st.back)
		return nil
	}
	resp.Body = sf
	return nil
}

// redactHeader replaces value forms in h's names and values in place.
func redactHeader(h http.Header, m *matcher) {
	for k, vs := range h {
		for i, v := range vs {
			vs[i] = m.replace(v)
		}
		if nk := m.replace(k); nk != k {
			delete(h, k)
			h[nk] = append(h[nk], vs...)
		}
	}
}

func (f *flow) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	n := f.n
	if st := stateOf(r.Context()); st != nil {
		if name := st.blocked.Load(); name != nil {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Gondolin-Denied", "1")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, n.secrets.redact("gondolin: the request carries secret "+*name+", which may not be sent to "+st.scheme+"://"+st.target+".\n"))
			return
		}
	}
	if errors.Is(err, context.Canceled) || r.Context().Err() != nil {
		return
	}
	n.logDebug("upstream request failed", "host", r.URL.Host, "error", err)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusBadGateway)
	io.WriteString(w, n.secrets.redact("gondolin: upstream "+r.URL.Host+" failed: "+err.Error()+"\n"))
}

// release drops the flow's idle upstream connections when the guest's
// connection is gone.
func (f *flow) release() {
	f.mu.Lock()
	ts := make([]*http.Transport, 0, len(f.upstream.m))
	for _, t := range f.upstream.m {
		ts = append(ts, t)
	}
	f.mu.Unlock()
	for _, t := range ts {
		t.CloseIdleConnections()
	}
}
