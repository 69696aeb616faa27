package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"time"
)

// HTTPSServer serves /bytes?n=N (N bytes) over TLS with a throw-away
// self-signed certificate on Port, and the same in plain HTTP on HTTPPort,
// for the download figures.
type HTTPSServer struct {
	IP       net.IP
	Port     int
	HTTPPort int
	// CertPEM is the server's self-signed certificate, for clients that
	// verify it (gondolin's egress proxy re-originates TLS with
	// verification, so its runtime config names this as a root).
	CertPEM []byte
	srv     *http.Server
	plain   *http.Server
}

// URL returns the HTTPS download URL for n bytes.
func (s *HTTPSServer) URL(n int64) string {
	return fmt.Sprintf("https://%s/bytes?n=%d", net.JoinHostPort(s.IP.String(), strconv.Itoa(s.Port)), n)
}

// HTTPURL returns the plain HTTP download URL for n bytes.
func (s *HTTPSServer) HTTPURL(n int64) string {
	return fmt.Sprintf("http://%s/bytes?n=%d", net.JoinHostPort(s.IP.String(), strconv.Itoa(s.HTTPPort)), n)
}

// Close stops the server.
func (s *HTTPSServer) Close() error {
	return errors.Join(s.srv.Close(), s.plain.Close())
}

// StartHTTPSServer listens on ip (port chosen by the kernel).
func StartHTTPSServer(ip net.IP) (*HTTPSServer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "gondolin-bench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(48 * time.Hour),
		IPAddresses:  []net.IP{ip},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		return nil, err
	}
	plainLn, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		ln.Close()
		return nil, err
	}
	chunk := make([]byte, 256<<10)
	mux := http.NewServeMux()
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "n must be a byte count", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			k := min(n, int64(len(chunk)))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	s := &HTTPSServer{
		IP: ip, Port: ln.Addr().(*net.TCPAddr).Port, HTTPPort: plainLn.Addr().(*net.TCPAddr).Port,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		srv: &http.Server{
			Handler:   mux,
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		},
		plain: &http.Server{Handler: mux},
	}
	go func() { _ = s.srv.ServeTLS(ln, "", "") }()
	go func() { _ = s.plain.Serve(plainLn) }()
	return s, nil
}

// HostIP returns the first global IPv4 address of an interface that is up:
// the address containers reach the host at with host networking, and that a
// VM's egress path re-dials (a loopback address would be the guest's own).
func HostIP() (net.IP, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				return ipn.IP.To4(), nil
			}
		}
	}
	return nil, fmt.Errorf("no interface with a global IPv4 address")
}
