package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
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
		ErrorLog:       log.New(redactWriter{&n.auditor}, "", 0),
		ErrorHandler:   f.proxyError,
		ModifyResponse: n.modifyResponse,
		// Bodies reach the guest in full-size segments (relay.go).
		BufferPool: n.copyBufs,
	}
	return f.proxy
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
