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
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/earendil-works/gondolin-containerd/oci"
)

// denial is why a request is refused and what would allow it.
type denial struct {
	status int
	reason string
	hint   string
}

// requestTarget is the host and port a request is for: its Host (or
// absolute URL) with the flow's destination port as the default port; the
// synthetic name, SNI or destination address stand in for a missing Host.
func (f *flow) requestTarget(r *http.Request) (string, uint16, bool) {
	h := r.Host
	if h == "" {
		switch {
		case f.sni != "":
			h = f.sni
		case f.name != "":
			h = f.name
		default:
			h = f.dst.Addr().String()
		}
	}
	port := f.dst.Port()
	if i := strings.LastIndexByte(h, ':'); i > strings.LastIndexByte(h, ']') {
		p, err := strconv.ParseUint(h[i+1:], 10, 16)
		if err != nil || p == 0 {
			return "", 0, false
		}
		port = uint16(p)
		h = h[:i]
	}
	host, ok := normalizeHost(h)
	return host, port, ok
}

// serveHTTP is the handler for every decrypted or plain guest request.
func (n *Network) serveHTTP(w http.ResponseWriter, r *http.Request) {
	f, _ := r.Context().Value(flowKey{}).(*flow)
	if f == nil {
		http.Error(w, "gondolin: no flow", http.StatusInternalServerError)
		return
	}
	scheme := "http"
	if f.tls {
		scheme = "https"
	}
	host, port, ok := f.requestTarget(r)
	rec := AuditRecord{Protocol: scheme, Host: host, Port: port, Method: r.Method, Path: r.URL.Path, Dest: f.dst.String()}
	if !ok {
		rec.Host = r.Host
		n.denyHTTP(w, rec, &denial{http.StatusBadRequest, "invalid Host " + strconv.Quote(r.Host), ""})
		return
	}
	if r.Method == http.MethodConnect {
		n.denyHTTP(w, rec, &denial{http.StatusForbidden, "CONNECT tunnels are not allowed", ""})
		return
	}
	if up := r.Header.Get("Upgrade"); up != "" && (r.ProtoMajor != 1 || !strings.EqualFold(up, "websocket")) {
		// Only WebSocket may take over a connection; other upgrades (h2c)
		// would escape per-request checks, so the request goes on plain.
		r.Header.Del("Upgrade")
	}
	if n.cfg.Mode == oci.NetModePolicy && !allowMatch(n.cfg.Allow, host, port) {
		n.denyHTTP(w, rec, &denial{http.StatusForbidden,
			hostPort(host, port) + " is not in " + oci.AnnotationNetAllow,
			"To allow it, add it to the container annotation " + oci.AnnotationNetAllow + " (for example " + oci.AnnotationNetAllow + "=" + allowExample(host, port, f.tls) + ")."})
		return
	}
	// userinfo of an absolute-form target is never sent on.
	r.URL.User = nil
	ap := n.secrets.apply(r, scheme, host, port)
	if ap.blocked != "" {
		n.denyHTTP(w, rec, &denial{http.StatusForbidden,
			"the request carries secret " + ap.blocked + ", which may not be sent to " + scheme + "://" + hostPort(host, port),
			"The hosts it may be sent to are set by the annotation " + oci.AnnotationSecretPrefix + ap.blocked + "."})
		return
	}
	addrs, d := n.upstreamAddrs(r.Context(), f, host, port, n.cfg.Mode == oci.NetModePolicy || ap.used)
	if d != nil {
		n.denyHTTP(w, rec, d)
		return
	}
	reason := "host in " + oci.AnnotationNetAllow
	if n.cfg.Mode == oci.NetModeOpen {
		reason = "net.mode=open"
	}
	if ap.substituted {
		reason += "; secrets substituted"
	}
	n.audit(rec.allow(reason))

	target := hostPort(host, port)
	st := &reqState{scheme: scheme, target: target, addrs: addrs, port: port, rec: rec}
	if len(n.secrets.list) > 0 {
		n.guardSecrets(r, st, ap)
	}
	r = r.WithContext(context.WithValue(r.Context(), reqStateKey{}, st))
	r.URL.Scheme = scheme
	r.URL.Host = target
	f.reverseProxy().ServeHTTP(w, r)
}

func allowExample(host string, port uint16, tls bool) string {
	if (tls && port == 443) || (!tls && port == 80) {
		return host
	}
	return hostPort(host, port)
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

// upstreamAddrs decides which addresses a request for host:port may be
// sent to. trustHost is set when the decision rests on the host (mode
// policy, or a secret is being substituted). A synthetic destination
// stands for its name, so the host is resolved here and every address
// checked; so it is with synthetic DNS when the host matters, since the
// guest's own choice of address is not trusted then. With forwarded DNS
// the guest's destination is used, but only if it is an address of the
// host when the host matters; in mode open without secrets the guest's
// public destination is used as it is. An internal address is never used
// unless net.allow-internal names it.
func (n *Network) upstreamAddrs(ctx context.Context, f *flow, host string, port uint16, trustHost bool) ([]netip.Addr, *denial) {
	if f.synthetic || n.cfg.DNS == oci.DNSSynthetic && trustHost {
		return n.resolveChecked(ctx, host, port)
	}
	ip := f.dst.Addr()
	if trustHost && !n.isAddrOf(ctx, ip, host) {
		return nil, &denial{http.StatusForbidden, "the guest connected to " + ip.String() + ", which is not an address of " + host, ""}
	}
	if n.cfg.addrBlocked(host, ip, port) {
		return nil, internalDenial(host, ip)
	}
	return []netip.Addr{ip}, nil
}

func internalDenial(host string, a netip.Addr) *denial {
	return &denial{http.StatusForbidden, host + " resolves to internal address " + a.String(),
		"To allow it, name it in the annotation " + oci.AnnotationNetAllowInternal + " (a host, IP or CIDR)."}
}

// resolveChecked resolves host and refuses it if any of its addresses is
// internal. The upstream connection is made to exactly these addresses.
func (n *Network) resolveChecked(ctx context.Context, host string, port uint16) ([]netip.Addr, *denial) {
	addrs, err := n.resolve(ctx, host)
	if err != nil {
		return nil, &denial{http.StatusBadGateway, "cannot resolve " + host + ": " + err.Error(), ""}
	}
	for _, a := range addrs {
		if n.cfg.addrBlocked(host, a, port) {
			return nil, internalDenial(host, a)
		}
	}
	return addrs, nil
}

func (n *Network) isAddrOf(ctx context.Context, ip netip.Addr, host string) bool {
	if lit, err := netip.ParseAddr(host); err == nil {
		return lit.Unmap() == ip
	}
	if n.records.has(ip, host) {
		return true
	}
	addrs, err := n.resolve(ctx, host)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if a == ip {
			return true
		}
	}
	return false
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
