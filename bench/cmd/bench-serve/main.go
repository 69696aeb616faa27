// Command bench-serve runs gondolin-bench's download server alone, on the
// host's address (as the download figures use it), for profiling a download
// by hand: it prints the HTTPS and HTTP URLs of N bytes and the certificate
// file, then serves until interrupted.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/earendil-works/gondolin-containerd/bench/harness"
)

func main() {
	n := flag.Int64("bytes", 1<<30, "size of the download the printed URLs ask for")
	certOut := flag.String("cert", "", "write the server's certificate (PEM) to this file (for upstream_ca_file)")
	flag.Parse()
	ip, err := harness.HostIP()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-serve:", err)
		os.Exit(1)
	}
	srv, err := harness.StartHTTPSServer(ip)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-serve:", err)
		os.Exit(1)
	}
	defer srv.Close()
	if *certOut != "" {
		if err := os.WriteFile(*certOut, srv.CertPEM, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench-serve:", err)
			os.Exit(1)
		}
		abs, _ := filepath.Abs(*certOut)
		fmt.Println("cert", abs)
	}
	fmt.Println("https", srv.URL(*n))
	fmt.Println("http", srv.HTTPURL(*n))
	for _, kind := range []harness.DownloadKind{harness.DownloadHTTPS, harness.DownloadHTTPSRelay, harness.DownloadHTTP} {
		fmt.Println("annotations", kind, harness.GondolinNetAnnotations(srv, kind))
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}
