package policy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"time"
)

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
