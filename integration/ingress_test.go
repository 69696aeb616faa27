//go:build integration

package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A port the guest listens on is reachable in the container's network
// namespace (here the host's, --net-host), and stops being so when the
// guest stops listening.
func TestIngressPublishesGuestListeners(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // a free port for the guest's server

	id := startDetached(t, []string{"--net-host"}, "sh", "-c",
		fmt.Sprintf("mkdir -p /tmp/www && echo hello-from-guest > /tmp/www/index.html && httpd -f -p %d -h /tmp/www & sleep 1000", port))
	waitStatus(t, id, "RUNNING", "")
	url := fmt.Sprintf("http://127.0.0.1:%d/index.html", port)
	client := &http.Client{Timeout: 5 * time.Second}
	var body string
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if strings.TrimSpace(body) != "hello-from-guest" {
		t.Fatalf("guest server not reachable at %s: %q", url, body)
	}
	// The guest stops listening: the port is released.
	if res := ctr(t, nil, "task", "exec", "--exec-id", "stop-httpd", id, "killall", "httpd"); res.code != 0 {
		t.Fatalf("killall httpd: %s", res)
	}
	deadline = time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("port %d still published after the guest stopped listening", port)
}
