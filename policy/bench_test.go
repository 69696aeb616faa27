package policy

import (
	"crypto/tls"
	"encoding/pem"
	"io"
	"net/http"
	"strconv"
	"testing"
)

const benchBytes = 32 << 20

// BenchmarkHTTPSDownload measures a guest's HTTPS download through the
// MITM (both TLS legs, both netstacks, the frame stream); compare with
// BenchmarkHTTPSDirect, the same download made on the host.
func BenchmarkHTTPSDownload(b *testing.B) {
	for _, mtu := range []int{1500, 65000} {
		b.Run("mtu"+strconv.Itoa(mtu), func(b *testing.B) {
			e := newEnv(b, Config{Allow: allow(b, "api.example.com"), MTU: mtu})
			c := e.g.client(e.n.CACertPEM(), false)
			b.SetBytes(benchBytes)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				download(b, c, "https://api.example.com/bytes?n="+strconv.Itoa(benchBytes))
			}
		})
	}
}

// BenchmarkHTTPDownload is a guest's plain HTTP download through the
// policy's HTTP proxy.
func BenchmarkHTTPDownload(b *testing.B) {
	for _, mtu := range []int{1500, 65000} {
		b.Run("mtu"+strconv.Itoa(mtu), func(b *testing.B) {
			e := newEnv(b, Config{Allow: allow(b, "api.example.com"), MTU: mtu})
			c := e.g.client(nil, false)
			b.SetBytes(benchBytes)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				download(b, c, "http://api.example.com/bytes?n="+strconv.Itoa(benchBytes))
			}
		})
	}
}

// BenchmarkRelayDownload is a guest's HTTPS download with the policy only
// relaying TCP (net.tcp-allow): the guest's TLS goes to the upstream.
func BenchmarkRelayDownload(b *testing.B) {
	for _, mtu := range []int{1500, 65000} {
		b.Run("mtu"+strconv.Itoa(mtu), func(b *testing.B) {
			e := newEnv(b, Config{TCPAllow: allow(b, "api.example.com:443"), MTU: mtu})
			c := e.g.client(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.ca.cert.Raw}), false)
			b.SetBytes(benchBytes)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				download(b, c, "https://api.example.com/bytes?n="+strconv.Itoa(benchBytes))
			}
		})
	}
}

func BenchmarkHTTPSDirect(b *testing.B) {
	ca := newUpstreamCA(b)
	up := newUpstream(b, ca)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool, ServerName: "api.example.com", NextProtos: []string{"http/1.1"}}}}
	b.SetBytes(benchBytes)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		download(b, c, "https://"+srvAddr(up.tlsSrv)+"/bytes?n="+strconv.Itoa(benchBytes))
	}
}

func download(b *testing.B, c *http.Client, url string) {
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != benchBytes {
		b.Fatalf("read %d bytes: %v", n, err)
	}
}
