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
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
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
	substituted, blocked := n.secrets.apply(r, host, port)
	if blocked != "" {
		n.denyHTTP(w, rec, &denial{http.StatusForbidden,
			"the request carries secret " + blocked + ", which may not be sent to " + host,
			"The hosts it may be sent to are set by the annotation " + oci.AnnotationSecretPrefix + blocked + "."})
		return
	}
	addrs, d := n.upstreamAddrs(r.Context(), f, host, port, n.cfg.Mode == oci.NetModePolicy || substituted)
	if d != nil {
		n.denyHTTP(w, rec, d)
		return
	}
	reason := "host in " + oci.AnnotationNetAllow
	if n.cfg.Mode == oci.NetModeOpen {
		reason = "net.mode=open"
	}
	if substituted {
		reason += "; secrets substituted"
	}
	n.audit(rec.allow(reason))

	target := hostPort(host, port)
	f.setChecked(target, addrs)
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

func (f *flow) setChecked(target string, addrs []netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.checked == nil {
		f.checked = map[string][]netip.Addr{}
	}
	f.checked[target] = addrs
}

// dialChecked is the upstream transport's dialer: it dials only addresses
// the request's check produced.
func (f *flow) dialChecked(ctx context.Context, network, addr string) (net.Conn, error) {
	f.mu.Lock()
	addrs := f.checked[addr]
	f.mu.Unlock()
	_, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, errors.New("policy: " + addr + " was not checked")
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, _, err := f.n.dialAddrs(ctx, addrs, uint16(port))
	return c, err
}

// reverseProxy is the flow's upstream side: its own transport, so
// upstream connections live and die with the guest's connection.
func (f *flow) reverseProxy() *httputil.ReverseProxy {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.proxy != nil {
		return f.proxy
	}
	n := f.n
	f.transport = &http.Transport{
		DialContext:           f.dialChecked,
		TLSClientConfig:       &tls.Config{RootCAs: n.cfg.RootCAs, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   dialTimeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
		ExpectContinueTimeout: time.Second,
	}
	f.proxy = &httputil.ReverseProxy{
		// The request URL is set by serveHTTP; Rewrite mode strips
		// X-Forwarded-* and keeps the guest's Host header.
		Rewrite:       func(*httputil.ProxyRequest) {},
		Transport:     f.transport,
		FlushInterval: -1,
		ErrorLog:      log.New(redactWriter{n}, "", 0),
		ErrorHandler:  f.proxyError,
		ModifyResponse: func(resp *http.Response) error {
			// No HTTP/3 hints: QUIC would bypass the mediation.
			resp.Header.Del("Alt-Svc")
			return nil
		},
	}
	return f.proxy
}

func (f *flow) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) || r.Context().Err() != nil {
		return
	}
	n := f.n
	n.logDebug("upstream request failed", "host", r.URL.Host, "error", err)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusBadGateway)
	io.WriteString(w, n.secrets.redact("gondolin: upstream "+r.URL.Host+" failed: "+err.Error()+"\n"))
}

// release drops the flow's idle upstream connections when the guest's
// connection is gone.
func (f *flow) release() {
	f.mu.Lock()
	t := f.transport
	f.mu.Unlock()
	if t != nil {
		t.CloseIdleConnections()
	}
}
