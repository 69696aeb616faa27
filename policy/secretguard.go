package policy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

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
