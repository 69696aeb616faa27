//go:build integration

package integration

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
)

// host.gondolin.internal reaches a service on the host's loopback under
// --net-host, by name over HTTP and by the gateway address over raw TCP,
// only when net.allow-internal names 127.0.0.1; without it the request is
// refused and the service never sees it.
func TestHostGondolinInternal(t *testing.T) {
	u := startUpstream(t)
	cfg, _ := runtimeConfig(t, u, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hits := make(chan string, 16)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits <- r.Host
		fmt.Fprintln(w, "hello from the host's loopback")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	name := fmt.Sprintf("host.gondolin.internal:%d", port)

	script := fmt.Sprintf(`curl -sS --max-time 20 http://%s/; echo "rc=$?"
		h=$(awk '$2 == "00000000" {print $3}' /proc/net/route)
		gw=$((16#${h:6:2})).$((16#${h:4:2})).$((16#${h:2:2})).$((16#${h:0:2}))
		exec 3<>/dev/tcp/$gw/%d && printf 'GET / HTTP/1.0\r\nHost: raw\r\n\r\n' >&3 && head -c 200 <&3; echo "raw rc=$?"`, name, port)
	res, _ := egressRun(t, cfg, []string{"io.gondolin.net.allow=" + name, "io.gondolin.net.tcp-allow=" + name, "io.gondolin.net.allow-internal=127.0.0.1"}, nil, script)
	if res.code != 0 || strings.Count(res.stdout, "hello from the host's loopback") != 2 || !strings.Contains(res.stdout, "rc=0") {
		t.Fatalf("the host's loopback by name: %s", res)
	}
	// The port is both in net.allow and net.tcp-allow: tcp-allow wins and the
	// gateway address is relayed raw.
	if !strings.Contains(res.stdout, "HTTP/1.0 200 OK") && !strings.Contains(res.stdout, "HTTP/1.1 200 OK") {
		t.Fatalf("the host's loopback by the gateway address: %s\nstdout: %s\nstderr: %s", res, res.stdout, res.stderr)
	}
	drain(hits)

	res, _ = egressRun(t, cfg, []string{"io.gondolin.net.allow=" + name}, nil,
		fmt.Sprintf(`curl -s -o /dev/null -w 'code=%%{http_code}\n' --max-time 20 http://%s/`, name))
	if res.code != 0 || !strings.Contains(res.stdout, "code=403") {
		t.Fatalf("without allow-internal the host should be refused: %s", res)
	}
	if got := drain(hits); len(got) != 0 {
		t.Fatalf("the host service saw %d requests without allow-internal: %q", len(got), got)
	}
}

func drain(ch chan string) []string {
	var out []string
	for {
		select {
		case v := <-ch:
			out = append(out, v)
		default:
			return out
		}
	}
}
