// Command bench-fetch downloads one URL over HTTPS and discards the body: the
// client of gondolin-bench's download figure, run inside the containers and
// on the host alike. It prints "@@start" before connecting and
// "@@done BYTES SECONDS" after the last byte; the harness times the markers.
//
// The certificate is not verified: the figure is throughput, and under an
// egress policy the container sees the policy's own certificate.
package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: bench-fetch URL")
		os.Exit(2)
	}
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:    &tls.Config{InsecureSkipVerify: true},
		DisableCompression: true,
		Proxy:              http.ProxyFromEnvironment,
	}}
	fmt.Println("@@start")
	start := time.Now()
	resp, err := client.Get(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-fetch:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "bench-fetch:", resp.Status)
		os.Exit(1)
	}
	n, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, 256<<10))
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench-fetch: after %d bytes: %v\n", n, err)
		os.Exit(1)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		fmt.Fprintf(os.Stderr, "bench-fetch: got %d of %d bytes\n", n, resp.ContentLength)
		os.Exit(1)
	}
	fmt.Printf("@@done %d %.6f\n", n, time.Since(start).Seconds())
}
