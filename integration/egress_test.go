//go:build integration

package integration

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// The egress tests run a distro image with curl in a container whose
// network namespace is the host's (ctr --net-host), so the shim's upstream
// dials reach test servers on loopback. The runtime config maps the test
// host names to 127.0.0.1 (upstream_hosts) and trusts the test CA
// (upstream_ca_file); the container knows none of this.

// testSecret is the real value of TOKEN; it must never reach the guest.
// Random per run, so a log line from an earlier run cannot be mistaken.
var testSecret = func() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "s3cr3t-" + hex.EncodeToString(b)
}()

// upstream is the test's HTTPS server and what it saw.
type upstream struct {
	port     int
	caFile   string
	mu       sync.Mutex
	requests []string // "host path auth-ok|auth-missing|auth-other"
}

func (u *upstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.requests...)
}

// upstreamNames are the names the runtime config maps to 127.0.0.1; the
// certificate covers them all.
var upstreamNames = []string{"api.x.test", "a.x.test", "x.test", "evilx.test", "other.test", "tcp.x.test", "dns.x.test"}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	return startUpstreamOn(t, "127.0.0.1")
}

// startUpstreamOn starts the test's HTTPS server on an address of this
// machine.
func startUpstreamOn(t *testing.T, addr string) *upstream {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gondolin test upstream CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "api.x.test"},
		DNSNames:  upstreamNames,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "upstream-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}

	u := &upstream{caFile: caFile}
	mux := http.NewServeMux()
	mux.HandleFunc("/download", func(w http.ResponseWriter, r *http.Request) {
		size, _ := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		_, _ = io.Copy(w, io.LimitReader(&patternReader{}, size))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		auth := "auth-missing"
		if v := r.Header.Get("Authorization") + r.Header.Get("X-Token"); v != "" {
			auth = "auth-other"
			if strings.Contains(v, testSecret) {
				auth = "auth-ok"
			}
		}
		u.mu.Lock()
		u.requests = append(u.requests, r.Host+" "+r.URL.Path+" "+auth)
		u.mu.Unlock()
		fmt.Fprintf(w, "hello from %s %s\n", r.Host, auth)
	})
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{{
		Certificate: [][]byte{leafDER}, PrivateKey: leafKey,
	}}}}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { srv.Close() })
	u.port = ln.Addr().(*net.TCPAddr).Port
	return u
}

// patternReader yields a byte pattern that depends only on the offset, so
// both ends can compute the download's checksum without storing it.
type patternReader struct{ off int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	for i := range p {
		o := r.off + int64(i)
		p[i] = byte(o) ^ byte(o>>9)*31
	}
	r.off += int64(len(p))
	return len(p), nil
}

func patternSHA256(size int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, io.LimitReader(&patternReader{}, size))
	return hex.EncodeToString(h.Sum(nil))
}

// runtimeConfig writes a runtime config for the egress tests and returns
// its path and the audit directory.
func runtimeConfig(t *testing.T, u *upstream, extra string) (path, auditDir string) {
	t.Helper()
	dir := t.TempDir()
	text, auditDir := runtimeConfigText(dir, u, "127.0.0.1", extra)
	path = filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, auditDir
}

// runtimeConfigText is a runtime config that maps the test's host names
// to addr, trusts the upstream's CA and audits into dir/audit.
func runtimeConfigText(dir string, u *upstream, addr, extra string) (text, auditDir string) {
	auditDir = filepath.Join(dir, "audit")
	var b strings.Builder
	fmt.Fprintf(&b, "audit_dir = %q\nupstream_ca_file = %q\n%s\n[upstream_hosts]\n", auditDir, u.caFile, extra)
	for _, n := range upstreamNames {
		fmt.Fprintf(&b, "%q = [%q]\n", n, addr)
	}
	return b.String(), auditDir
}

// egressRun runs a shell script in the distro image with the given
// annotations and env, in the host's network namespace.
func egressRun(t *testing.T, configPath string, annotations, env []string, script string) (result, string) {
	t.Helper()
	id := newID(t)
	args := []string{"run", "--rm", "--runtime", runtimeName, "--runtime-config-path", configPath, "--net-host"}
	for _, a := range annotations {
		args = append(args, "--annotation", a)
	}
	for _, e := range env {
		args = append(args, "--env", e)
	}
	args = append(args, distroImage(t), id, "bash", "-c", script)
	res := ctr(t, nil, args...)
	t.Cleanup(func() { assertNoLeftovers(t, id) })
	return res, id
}

type auditLine struct {
	Protocol string `json:"protocol"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
}

func readAudit(t *testing.T, auditDir, id string) ([]auditLine, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(auditDir, namespace(), id+".jsonl"))
	if err != nil {
		t.Fatalf("audit file: %v", err)
	}
	var lines []auditLine
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		var l auditLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	return lines, string(b)
}

func hasDecision(lines []auditLine, host, decision string) bool {
	for _, l := range lines {
		if l.Host == host && l.Decision == decision {
			return true
		}
	}
	return false
}

// An allowed HTTPS host answers and receives the real secret, while the
// guest's environment only ever holds the placeholder.
func TestEgressAllowedHostGetsSecret(t *testing.T) {
	u := startUpstream(t)
	cfg, auditDir := runtimeConfig(t, u, "")
	url := fmt.Sprintf("https://api.x.test:%d/hello", u.port)
	res, id := egressRun(t, cfg,
		[]string{fmt.Sprintf("io.gondolin.net.allow=api.x.test:%d", u.port), fmt.Sprintf("io.gondolin.secret.TOKEN=api.x.test:%d", u.port)},
		[]string{"TOKEN=" + testSecret},
		`curl -fsS -H "Authorization: Bearer $TOKEN" `+url+` && echo "env:$TOKEN" && cat /proc/$$/environ | tr '\0' '\n' | grep ^TOKEN= && cat /proc/self/environ | tr '\0' '\n' | grep ^TOKEN=`)
	if res.code != 0 || !strings.Contains(res.stdout, "hello from api.x.test") || !strings.Contains(res.stdout, "auth-ok") {
		t.Fatalf("allowed request with secret: %s", res)
	}
	if strings.Contains(res.stdout+res.stderr, testSecret) {
		t.Fatalf("the real secret reached the guest: %s", res)
	}
	if !strings.Contains(res.stdout, "env:") || strings.Count(res.stdout, "TOKEN=") != 2 {
		t.Fatalf("the guest should see TOKEN with a placeholder: %s", res)
	}
	lines, raw := readAudit(t, auditDir, id)
	if !hasDecision(lines, "api.x.test", "allowed") || strings.Contains(raw, testSecret) {
		t.Fatalf("audit should record the allowed request and no secret:\n%s", raw)
	}
	// The shim logs (through containerd's log) never carry it either.
	if logFile := os.Getenv("GONDOLIN_DEV_CONTAINERD_LOG"); logFile != "" {
		b, err := os.ReadFile(logFile)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), testSecret) {
			t.Fatalf("the secret is in containerd's log %s", logFile)
		}
	}
}

// A host not on the list is refused and audited; `*.x.test` covers
// subdomains only.
func TestEgressAllowlist(t *testing.T) {
	u := startUpstream(t)
	cfg, auditDir := runtimeConfig(t, u, "")
	p := u.port
	script := fmt.Sprintf(`for h in a.x.test x.test evilx.test other.test; do
		code=$(curl -s -o /dev/null -w '%%{http_code}' --max-time 20 https://$h:%d/); echo "$h $code"
	done`, p)
	res, id := egressRun(t, cfg, []string{fmt.Sprintf("io.gondolin.net.allow=*.x.test:%d", p)}, nil, script)
	if res.code != 0 {
		t.Fatalf("%s", res)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(res.stdout), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			got[f[0]] = f[1]
		}
	}
	if got["a.x.test"] != "200" {
		t.Errorf("a.x.test should be allowed by *.x.test: %q", got["a.x.test"])
	}
	for _, h := range []string{"x.test", "evilx.test", "other.test"} {
		if got[h] == "200" {
			t.Errorf("%s must not be reachable with *.x.test: %q", h, got[h])
		}
	}
	for _, r := range u.seen() {
		if !strings.HasPrefix(r, "a.x.test:") {
			t.Errorf("upstream saw a request it should not have: %s", r)
		}
	}
	lines, raw := readAudit(t, auditDir, id)
	for _, h := range []string{"x.test", "evilx.test", "other.test"} {
		if !hasDecision(lines, h, "denied") {
			t.Errorf("no denial of %s in the audit:\n%s", h, raw)
		}
	}
}

// A denied plain-HTTP request gets a 403 whose body names the rule; an IP
// literal in a private range is refused even when listed.
func TestEgressDeniedExplainsAndInternalRefused(t *testing.T) {
	u := startUpstream(t)
	cfg, auditDir := runtimeConfig(t, u, "")
	// The guest connects to an address of its choosing on a port the
	// policy covers: the request is parsed and its Host decides.
	script := fmt.Sprintf(`curl -s --max-time 20 --resolve api.x.test:%d:1.1.1.1 http://api.x.test:%d/ ; echo; curl -s -o /dev/null -w '%%{http_code}\n' --max-time 20 http://10.1.2.3/`, u.port, u.port)
	res, id := egressRun(t, cfg, []string{"io.gondolin.net.allow=10.1.2.3,other.test:" + strconv.Itoa(u.port)}, nil, script)
	if !strings.Contains(res.stdout, "io.gondolin.net.allow") {
		t.Errorf("a denied request should name the annotation that would allow it: %s", res)
	}
	lines, raw := readAudit(t, auditDir, id)
	if !hasDecision(lines, "10.1.2.3", "denied") {
		t.Errorf("the private IP literal was not refused:\n%s\n%s", raw, res)
	}
}

// A placeholder sent to a host the secret is not for blocks the request,
// which never leaves the host, and is audited.
func TestEgressPlaceholderToOtherHostBlocked(t *testing.T) {
	u := startUpstream(t)
	cfg, auditDir := runtimeConfig(t, u, "")
	p := u.port
	script := fmt.Sprintf(`curl -s -w '\n%%{http_code}\n' -H "X-Token: $TOKEN" https://other.test:%d/leak`, p)
	res, id := egressRun(t, cfg,
		[]string{fmt.Sprintf("io.gondolin.net.allow=api.x.test:%d,other.test:%d", p, p), "io.gondolin.secret.TOKEN=api.x.test"},
		[]string{"TOKEN=" + testSecret}, script)
	if !strings.HasSuffix(strings.TrimSpace(res.stdout), "403") || !strings.Contains(res.stdout, "secret TOKEN") {
		t.Fatalf("want 403 naming the secret: %s", res)
	}
	if len(u.seen()) != 0 {
		t.Fatalf("the request reached the upstream: %v", u.seen())
	}
	lines, raw := readAudit(t, auditDir, id)
	if !hasDecision(lines, "other.test", "denied") || strings.Contains(raw, testSecret) {
		t.Fatalf("audit:\n%s", raw)
	}
}

// dnsRecorder is a DNS server on loopback that records the names asked.
type dnsRecorder struct {
	addr  string
	mu    sync.Mutex
	asked []string
}

func (d *dnsRecorder) names() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.asked...)
}

func startDNS(t *testing.T) *dnsRecorder {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	d := &dnsRecorder{addr: pc.LocalAddr().String()}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			d.mu.Lock()
			d.asked = append(d.asked, strings.TrimSuffix(q.Name.String(), "."))
			d.mu.Unlock()
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
			_ = b.StartQuestions()
			_ = b.Question(q)
			_ = b.StartAnswers()
			if q.Type == dnsmessage.TypeA {
				_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: [4]byte{127, 0, 0, 1}})
			}
			msg, _ := b.Finish()
			_, _ = pc.WriteTo(msg, from)
		}
	}()
	return d
}

// With forwarded DNS the allowlist is checked before the host asks any
// resolver: a name that is not allowed causes no lookup at all.
func TestEgressDNSNoLookupForDeniedName(t *testing.T) {
	u := startUpstream(t)
	d := startDNS(t)
	cfg, _ := runtimeConfig(t, u, fmt.Sprintf("upstream_dns = [%q]", d.addr))
	res, _ := egressRun(t, cfg,
		[]string{"io.gondolin.net.dns=trusted", "io.gondolin.net.allow=allowed.example"},
		nil, `getent hosts denied.example; getent hosts allowed.example; true`)
	if res.code != 0 {
		t.Fatalf("%s", res)
	}
	asked := strings.Join(d.names(), " ")
	if strings.Contains(asked, "denied.example") {
		t.Fatalf("the host looked up a name the policy does not allow: %q", asked)
	}
	if !strings.Contains(asked, "allowed.example") {
		t.Fatalf("an allowed name should be forwarded to the resolver (else this test proves nothing): %q\n%s", asked, res)
	}
}

// net.mode=open reaches a non-HTTP TCP port (internal ranges still need
// naming: the test name is vouched for by the runtime config).
func TestEgressOpenModeRawTCP(t *testing.T) {
	u := startUpstream(t)
	cfg, _ := runtimeConfig(t, u, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "echo:%s", line)
			}()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	script := fmt.Sprintf(`exec 3<>/dev/tcp/tcp.x.test/%d && echo ping >&3 && head -n1 <&3`, port)
	res, _ := egressRun(t, cfg, []string{"io.gondolin.net.mode=open"}, nil, script)
	if res.code != 0 || strings.TrimSpace(res.stdout) != "echo:ping" {
		t.Fatalf("raw TCP in open mode: %s", res)
	}
	// The same in policy mode is refused...
	res, _ = egressRun(t, cfg, nil, nil, script)
	if res.code == 0 {
		t.Fatalf("raw TCP in policy mode should be refused: %s", res)
	}
	// ...unless net.tcp-allow names the target.
	res, _ = egressRun(t, cfg, []string{fmt.Sprintf("io.gondolin.net.tcp-allow=tcp.x.test:%d", port)}, nil, script)
	if res.code != 0 || strings.TrimSpace(res.stdout) != "echo:ping" {
		t.Fatalf("raw TCP to a net.tcp-allow target: %s", res)
	}
}

// The operator's runtime config sets the default policy, and a container
// cannot set an annotation the operator did not allow.
func TestEgressOperatorPolicy(t *testing.T) {
	u := startUpstream(t)
	cfg, _ := runtimeConfig(t, u, fmt.Sprintf("allowed_annotations = [\"io.gondolin.vm.*\"]\n[default_annotations]\n\"io.gondolin.net.allow\" = \"api.x.test:%d\"", u.port))
	res, _ := egressRun(t, cfg, nil, nil, fmt.Sprintf("curl -fsS https://api.x.test:%d/default", u.port))
	if res.code != 0 || !strings.Contains(res.stdout, "hello from api.x.test") {
		t.Fatalf("the operator's default allowlist should apply: %s", res)
	}
	res, _ = egressRun(t, cfg, []string{"io.gondolin.net.allow=other.test"}, nil, "true")
	if res.code == 0 || !strings.Contains(res.stderr, "io.gondolin.net.allow is not allowed by the runtime config") {
		t.Fatalf("a container loosening the operator's policy must fail clearly: %s", res)
	}
}

// net.mode=none: the guest has no NIC at all.
func TestEgressModeNone(t *testing.T) {
	u := startUpstream(t)
	cfg, _ := runtimeConfig(t, u, "")
	// Ethernet devices (ARPHRD_ETHER = 1); lo is not a NIC.
	script := `for d in /sys/class/net/*; do [ "$(cat $d/type)" = 1 ] && echo "${d##*/}"; done; true`
	res, _ := egressRun(t, cfg, []string{"io.gondolin.net.mode=none"}, nil, script)
	if res.code != 0 || strings.TrimSpace(res.stdout) != "" {
		t.Fatalf("want no NIC: %s", res)
	}
	res, _ = egressRun(t, cfg, nil, nil, script)
	if res.code != 0 || len(strings.Fields(res.stdout)) != 1 {
		t.Fatalf("policy mode should have one NIC: %s", res)
	}
	// Without a network a secret has nowhere to go, and its value still
	// never reaches the VM: the guest sees a placeholder.
	res, _ = egressRun(t, cfg, []string{"io.gondolin.net.mode=none", "io.gondolin.secret.TOKEN=api.x.test"},
		[]string{"TOKEN=s3cr3t-value-none"}, `echo "$TOKEN"; cat /proc/1/environ | tr '\0' '\n' | grep TOKEN`)
	if res.code != 0 || strings.Contains(res.stdout, "s3cr3t") || !strings.Contains(res.stdout, "GONDOLIN_SECRET_") {
		t.Fatalf("net.mode=none: the secret's value must stay on the host: %s", res)
	}
}

// A plain `ctr run` asks for a fresh, empty network namespace: as with
// runc, the container gets no egress (its flows are dialled from there).
func TestEgressEmptyNetnsHasNoEgress(t *testing.T) {
	u := startUpstream(t)
	cfg, _ := runtimeConfig(t, u, "")
	id := newID(t)
	res := ctr(t, nil, "run", "--rm", "--runtime", runtimeName, "--runtime-config-path", cfg,
		"--annotation", fmt.Sprintf("io.gondolin.net.allow=api.x.test:%d", u.port),
		distroImage(t), id, "bash", "-c", fmt.Sprintf("curl -fsS --max-time 20 https://api.x.test:%d/", u.port))
	t.Cleanup(func() { assertNoLeftovers(t, id) })
	if res.code == 0 || len(u.seen()) != 0 {
		t.Fatalf("a container in an empty network namespace reached the upstream: %s %v", res, u.seen())
	}
	// As with runc, no interface but lo (no tunnel stub such as sit0
	// either).
	id2 := newID(t)
	res = ctr(t, nil, "run", "--rm", "--runtime", runtimeName, "--runtime-config-path", cfg, distroImage(t), id2,
		"bash", "-c", "ls /sys/class/net | grep -v -x lo; true")
	t.Cleanup(func() { assertNoLeftovers(t, id2) })
	if res.code != 0 || strings.TrimSpace(res.stdout) != "" {
		t.Fatalf("an empty namespace should leave the guest only lo: %s", res)
	}
}

// A 1 GiB HTTPS download through the policy stack arrives intact.
func TestEgressLargeDownload(t *testing.T) {
	u := startUpstream(t)
	cfg, _ := runtimeConfig(t, u, "")
	const size = 1 << 30
	script := fmt.Sprintf(`curl -fsS https://api.x.test:%d/download?size=%d | sha256sum`, u.port, size)
	start := time.Now()
	res, _ := egressRun(t, cfg, []string{fmt.Sprintf("io.gondolin.net.allow=api.x.test:%d", u.port)}, nil, script)
	t.Logf("1 GiB through the policy stack in %s", time.Since(start).Round(time.Millisecond))
	want := patternSHA256(size)
	if res.code != 0 || strings.Fields(res.stdout)[0] != want {
		t.Fatalf("download checksum: want %s, got %s", want, res)
	}
}
