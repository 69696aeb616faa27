package policy

import (
	"context"
	"crypto/tls"
	"errors"
	"time"
)

// tlsHandshakeTimeout bounds the guest-side MITM handshake.
const tlsHandshakeTimeout = 30 * time.Second

// serveTLS terminates the guest's TLS with a leaf from the host CA and
// hands the decrypted stream to the HTTP server.
func (n *Network) serveTLS(f *flow, fc *flowConn) {
	f.tls = true
	tc := tls.Server(fc, n.tlsConfig)
	ctx, cancel := context.WithTimeout(n.ctx, tlsHandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		rec := f.record("tls")
		if f.sni != "" {
			rec.Host = f.sni
		}
		n.audit(rec.deny("TLS handshake with the guest failed (does it trust the gondolin CA?): " + err.Error()))
		tc.Close()
		return
	}
	n.httpLn.push(tc)
}

func (n *Network) getCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	var f *flow
	if fc, ok := h.Conn.(*flowConn); ok {
		f = fc.f
	}
	name, ok := normalizeHost(h.ServerName)
	if ok && f != nil {
		f.sni = name
	}
	if !ok {
		switch {
		case f != nil && f.name != "":
			name = f.name
		case f != nil:
			name = f.dst.Addr().String()
		default:
			return nil, errors.New("no server name")
		}
	}
	return n.ca.leaf(name)
}
