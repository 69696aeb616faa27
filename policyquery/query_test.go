package policyquery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/earendil-works/gondolin-containerd/config"
)

// tableResolver answers from a table and remembers what it was asked.
type tableResolver struct {
	mu    sync.Mutex
	table map[string][]netip.Addr
	asked []string
}

func (r *tableResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, host)
	addrs, ok := r.table[host]
	if !ok {
		return nil, fmt.Errorf("lookup %s: no such host", host)
	}
	if network == "ip4" {
		var v4 []netip.Addr
		for _, a := range addrs {
			if a.Is4() {
				v4 = append(v4, a)
			}
		}
		return v4, nil
	}
	return addrs, nil
}

var (
	apiIP   = netip.MustParseAddr("93.184.215.10")
	otherIP = netip.MustParseAddr("93.184.215.11")
	dbIP    = netip.MustParseAddr("93.184.215.12")
	ghIP    = netip.MustParseAddr("140.82.121.6")
	// hostIP is the host's own public address.
	hostIP = netip.MustParseAddr("93.184.215.99")
)

func testEnv() (Env, *tableResolver) {
	res := &tableResolver{table: map[string][]netip.Addr{
		"api.example.com":      {apiIP},
		"a.example.com":        {apiIP},
		"other.example.com":    {otherIP},
		"db.example.com":       {dbIP},
		"internal.example.com": {netip.MustParseAddr("10.0.0.5")},
		"self.example.com":     {hostIP},
		"api.github.com":       {ghIP},
		"v6only.example.com":   {netip.MustParseAddr("2606:2800:220:1::10")},
	}}
	return Env{
		Resolver:  res,
		HostAddrs: func(context.Context) ([]netip.Addr, error) { return []netip.Addr{hostIP}, nil },
	}, res
}

// loadConfig loads a runtime config written as toml ("" for the
// defaults, as on a host without a config file).
func loadConfig(t *testing.T, toml string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, filepath.Join(dir, "bin"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func mustTarget(t *testing.T, s string) Target {
	t.Helper()
	tg, err := ParseTarget(s)
	if err != nil {
		t.Fatalf("ParseTarget(%q): %v", s, err)
	}
	return tg
}

// ann turns "k=v" pairs into annotations, prefixing io.gondolin.
func ann(kv ...string) map[string]string {
	m := map[string]string{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		m["io.gondolin."+k] = v
	}
	return m
}

type want struct {
	decision string
	// reason and hint are substrings of the report's; stepsDenied is the
	// step that denies ("" when allowed).
	reason, hint string
	denyStep     string
	// secrets maps a secret to its outcome.
	secrets map[string]string
}

func check(t *testing.T, rep *Report, w want) {
	t.Helper()
	var text bytes.Buffer
	_ = rep.WriteText(&text)
	if rep.Decision != w.decision {
		t.Fatalf("decision %s, want %s:\n%s", rep.Decision, w.decision, text.String())
	}
	if rep.Allowed != (w.decision == DecisionAllowed) {
		t.Fatalf("Allowed %v with decision %s", rep.Allowed, rep.Decision)
	}
	if !strings.Contains(rep.Reason, w.reason) {
		t.Fatalf("reason %q, want it to hold %q:\n%s", rep.Reason, w.reason, text.String())
	}
	if w.hint != "" && !strings.Contains(rep.Hint, w.hint) {
		t.Fatalf("hint %q, want it to hold %q:\n%s", rep.Hint, w.hint, text.String())
	}
	if w.denyStep != "" {
		last := rep.Steps[len(rep.Steps)-1]
		if last.Name != w.denyStep || last.Allowed {
			t.Fatalf("denied at %s (allowed %v), want denied at %s:\n%s", last.Name, last.Allowed, w.denyStep, text.String())
		}
	}
	got := map[string]string{}
	for _, s := range rep.Secrets {
		got[s.Name] = s.Outcome
	}
	for name, outcome := range w.secrets {
		if got[name] != outcome {
			t.Fatalf("secret %s: %q, want %q:\n%s", name, got[name], outcome, text.String())
		}
	}
	if len(got) != len(w.secrets) {
		t.Fatalf("secrets %v, want %v", got, w.secrets)
	}
}

func TestEvaluate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		config  string
		ann     map[string]string
		target  string
		method  string
		headers []string
		want    want
	}{
		{name: "allowed host", ann: ann("net.allow=api.example.com"), target: "https://api.example.com/user",
			want: want{decision: DecisionAllowed, reason: "host in io.gondolin.net.allow"}},
		{name: "allowed plain http", ann: ann("net.allow=api.example.com"), target: "http://api.example.com/",
			method: "POST", headers: []string{"Content-Type: application/json"},
			want: want{decision: DecisionAllowed, reason: "host in io.gondolin.net.allow"}},
		{name: "denied host is refused at DNS", ann: ann("net.allow=api.example.com"), target: "https://other.example.com/",
			want: want{decision: DecisionDenied, reason: "name not in io.gondolin.net.allow", denyStep: StepDNS}},
		{name: "denied host with forwarded DNS names the annotation", ann: ann("net.allow=api.example.com", "net.dns=open"), target: "https://other.example.com/",
			want: want{decision: DecisionDenied, reason: "other.example.com:443 is not in io.gondolin.net.allow",
				hint: "io.gondolin.net.allow=other.example.com", denyStep: StepRequest}},
		{name: "trusted DNS forwards an allowed name", ann: ann("net.allow=api.example.com", "net.dns=trusted"), target: "https://api.example.com/",
			want: want{decision: DecisionAllowed, reason: "host in io.gondolin.net.allow"}},
		{name: "wildcard covers a subdomain", ann: ann("net.allow=*.example.com"), target: "https://a.example.com/",
			want: want{decision: DecisionAllowed, reason: "host in io.gondolin.net.allow"}},
		{name: "wildcard does not cover the domain", ann: ann("net.allow=*.example.com"), target: "https://example.com/",
			want: want{decision: DecisionDenied, reason: "name not in io.gondolin.net.allow", denyStep: StepDNS}},
		{name: "port entry covers its port", ann: ann("net.allow=api.example.com:8443"), target: "https://api.example.com:8443/",
			want: want{decision: DecisionAllowed, reason: "host in io.gondolin.net.allow"}},
		{name: "port entry does not cover 443", ann: ann("net.allow=api.example.com:8443"), target: "https://api.example.com/",
			want: want{decision: DecisionDenied, reason: "port 443 of api.example.com is not in io.gondolin.net.allow",
				hint: "io.gondolin.net.tcp-allow=api.example.com:443", denyStep: StepConnect}},
		{name: "entry without port covers 80 and 443 only", ann: ann("net.allow=api.example.com"), target: "http://api.example.com:8080/",
			want: want{decision: DecisionDenied, reason: "port 8080", denyStep: StepConnect}},
		{name: "tcp-allow relays raw", ann: ann("net.tcp-allow=db.example.com:5432"), target: "db.example.com:5432",
			want: want{decision: DecisionAllowed, reason: "io.gondolin.net.tcp-allow"}},
		{name: "tcp-allow is per port", ann: ann("net.tcp-allow=db.example.com:5432"), target: "db.example.com:5433",
			want: want{decision: DecisionDenied, reason: "port 5433", denyStep: StepConnect}},
		{name: "raw TCP on an allowed web port is only inspected", ann: ann("net.allow=api.example.com"), target: "api.example.com:443",
			want: want{decision: DecisionInspected, reason: "only HTTP or TLS", hint: "io.gondolin.net.tcp-allow=api.example.com:443"}},
		{name: "an allowed name resolving to an internal address is refused", ann: ann("net.allow=internal.example.com"), target: "https://internal.example.com/",
			want: want{decision: DecisionDenied, reason: "internal.example.com resolves to internal address 10.0.0.5",
				hint: "io.gondolin.net.allow-internal", denyStep: StepRequest}},
		{name: "an internal IP literal is refused even when listed", ann: ann("net.allow=10.1.2.3"), target: "http://10.1.2.3/",
			want: want{decision: DecisionDenied, reason: "internal address", hint: "io.gondolin.net.allow-internal", denyStep: StepConnect}},
		{name: "allow-internal lets it through", ann: ann("net.allow=internal.example.com", "net.allow-internal=10.0.0.0/8"), target: "https://internal.example.com/",
			want: want{decision: DecisionAllowed, reason: "host in io.gondolin.net.allow"}},
		{name: "the host's own address is internal", ann: ann("net.allow=self.example.com"), target: "https://self.example.com/",
			want: want{decision: DecisionDenied, reason: "internal address 93.184.215.99", denyStep: StepRequest}},
		{name: "upstream_hosts pins a name, which may then be internal",
			config: "[upstream_hosts]\n\"pinned.test\" = [\"127.0.0.1\"]\n", ann: ann("net.allow=pinned.test:8443"), target: "https://pinned.test:8443/",
			want: want{decision: DecisionAllowed, reason: "host in io.gondolin.net.allow"}},
		{name: "forwarded DNS does not answer from upstream_hosts",
			config: "[upstream_hosts]\n\"pinned.test\" = [\"127.0.0.1\"]\n", ann: ann("net.allow=pinned.test", "net.dns=trusted"), target: "https://pinned.test/",
			want: want{decision: DecisionDenied, reason: "upstream_hosts pins the name", denyStep: StepDNS}},
		{name: "named policy from the config", config: `
[policies.gh]
allow = ["api.github.com"]
[policies.gh.secrets]
GITHUB_TOKEN = "api.github.com"
`, ann: ann("policy=gh"), target: "https://api.github.com/user",
			want: want{decision: DecisionAllowed, reason: "host in io.gondolin.net.allow", secrets: map[string]string{"GITHUB_TOKEN": SecretSubstituted}}},
		{name: "default policy of the config applies without annotations", config: `
allowed_annotations = ["io.gondolin.policy"]
[default_annotations]
"io.gondolin.policy" = "gh"
[policies.gh]
allow = "api.github.com"
`, target: "https://api.github.com/",
			want: want{decision: DecisionAllowed, reason: "host in io.gondolin.net.allow"}},
		{name: "secret substituted for its host", ann: ann("net.allow=api.example.com,other.example.com", "secret.TOKEN=api.example.com"), target: "https://api.example.com/",
			want: want{decision: DecisionAllowed, reason: "host in", secrets: map[string]string{"TOKEN": SecretSubstituted}}},
		{name: "secret blocked for another host", ann: ann("net.allow=api.example.com,other.example.com", "secret.TOKEN=api.example.com"), target: "https://other.example.com/",
			want: want{decision: DecisionAllowed, reason: "host in", secrets: map[string]string{"TOKEN": SecretBlocked}}},
		{name: "secret bound to https is blocked over http", ann: ann("net.allow=api.example.com", "secret.TOKEN=api.example.com"), target: "http://api.example.com/",
			want: want{decision: DecisionAllowed, reason: "host in", secrets: map[string]string{"TOKEN": SecretBlocked}}},
		{name: "secret bound to http with a port", ann: ann("net.allow=api.example.com:8080", "secret.TOKEN=http://api.example.com:8080"), target: "http://api.example.com:8080/",
			want: want{decision: DecisionAllowed, reason: "host in", secrets: map[string]string{"TOKEN": SecretSubstituted}}},
		{name: "secret not sent when the request is denied", ann: ann("net.allow=api.example.com", "secret.TOKEN=api.example.com", "net.dns=open"), target: "https://other.example.com/",
			want: want{decision: DecisionDenied, reason: "is not in io.gondolin.net.allow", denyStep: StepRequest, secrets: map[string]string{"TOKEN": SecretNotSent}}},
		{name: "secret goes raw through tcp-allow", ann: ann("net.tcp-allow=api.example.com:443", "secret.TOKEN=api.example.com"), target: "https://api.example.com/",
			want: want{decision: DecisionAllowed, reason: "io.gondolin.net.tcp-allow", secrets: map[string]string{"TOKEN": SecretRaw}}},
		{name: "net.mode=none has no network", ann: ann("net.mode=none", "net.allow=api.example.com"), target: "https://api.example.com/",
			want: want{decision: DecisionDenied, reason: "net.mode=none", denyStep: StepNet}},
		{name: "net.mode=open allows any public host", ann: ann("net.mode=open"), target: "https://other.example.com/",
			want: want{decision: DecisionAllowed, reason: "net.mode=open"}},
		{name: "net.mode=open relays raw TCP", ann: ann("net.mode=open"), target: "db.example.com:5432",
			want: want{decision: DecisionAllowed, reason: "net.mode=open"}},
		{name: "net.mode=open still refuses internal addresses", ann: ann("net.mode=open"), target: "http://10.1.2.3/",
			want: want{decision: DecisionDenied, reason: "internal address", denyStep: StepConnect}},
		{name: "localhost is the guest's own", ann: ann("net.allow=api.example.com"), target: "http://localhost:8080/",
			want: want{decision: DecisionDenied, reason: "the guest's own loopback", denyStep: StepConnect}},
		{name: "the host needs allow-internal", ann: ann("net.allow=host.gondolin.internal:8080"), target: "http://host.gondolin.internal:8080/",
			want: want{decision: DecisionDenied, reason: "internal address", denyStep: StepRequest}},
		{name: "the host with allow-internal", ann: ann("net.allow=host.gondolin.internal:8080", "net.allow-internal=127.0.0.1"), target: "http://host.gondolin.internal:8080/",
			want: want{decision: DecisionAllowed, reason: "host in io.gondolin.net.allow"}},
		{name: "IPv6 is not reachable from the guest", ann: ann("net.allow=*.example.com", "net.dns=open"), target: "https://v6only.example.com/",
			want: want{decision: DecisionDenied, reason: "no IPv4 address", denyStep: StepDNS}},
		{name: "IPv6 literal", ann: ann("net.mode=open"), target: "http://[2606:2800:220:1::10]/",
			want: want{decision: DecisionDenied, reason: "IPv4 only", denyStep: StepConnect}},
		{name: "CONNECT is never allowed", ann: ann("net.allow=api.example.com"), target: "http://api.example.com/", method: "CONNECT",
			want: want{decision: DecisionDenied, reason: "CONNECT", denyStep: StepRequest}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := loadConfig(t, tc.config)
			env, _ := testEnv()
			h := http.Header{}
			for _, l := range tc.headers {
				if err := ParseHeader(h, l); err != nil {
					t.Fatal(err)
				}
			}
			rep, err := Evaluate(context.Background(), cfg, Query{Target: mustTarget(t, tc.target), Method: tc.method, Header: h, Annotations: tc.ann}, env)
			if err != nil {
				t.Fatal(err)
			}
			check(t, rep, tc.want)
		})
	}
}

// With synthetic DNS a denied name is never looked up on the host, as in
// the shim.
func TestDeniedNameNotLookedUp(t *testing.T) {
	env, res := testEnv()
	rep, err := Evaluate(context.Background(), loadConfig(t, ""), Query{Target: mustTarget(t, "https://other.example.com/"), Annotations: ann("net.allow=api.example.com")}, env)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Allowed || len(res.asked) != 0 {
		t.Fatalf("allowed %v, lookups %v", rep.Allowed, res.asked)
	}
}

// Bad input is an *InputError naming what was wrong and what is accepted.
func TestEvaluateBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		ann          map[string]string
		target       string
		want         string
	}{
		{"bad annotation value", "", ann("net.mode=closed"), "https://api.example.com/", "policy, open or none"},
		{"unknown annotation", "", ann("net.alow=api.example.com"), "https://api.example.com/", "is not known"},
		{"annotation the operator forbids", "allowed_annotations = [\"io.gondolin.policy\"]\n", ann("net.allow=api.example.com"), "https://api.example.com/", "not allowed by the runtime config"},
		{"undefined named policy", "", ann("policy=nope"), "https://api.example.com/", `policy "nope" is not defined`},
		{"tcp-allow wildcard", "", ann("net.tcp-allow=*.example.com:22"), "db.example.com:22", "tcp-allow"},
		{"not a host name", "", ann("net.mode=open"), "https://bad!host/", "not a host name"},
		{"host secret bound elsewhere", "[secrets.TOKEN]\nenv = \"GONDOLIN_UNSET\"\nhosts = \"api.example.com\"\n", ann("secret.TOKEN=evil.example.com"), "https://evil.example.com/", "secret TOKEN may not be sent to https://evil.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, _ := testEnv()
			tg, err := ParseTarget(tc.target)
			if err == nil {
				_, err = Evaluate(context.Background(), loadConfig(t, tc.config), Query{Target: tg, Annotations: tc.ann}, env)
			}
			var ie *InputError
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v (%T), want an InputError holding %q", err, err, tc.want)
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in         string
		proto      string
		host       string
		port       uint16
		wantErrSub string
	}{
		{in: "https://API.Example.com./x?y=1", proto: ProtoHTTPS, host: "api.example.com", port: 443},
		{in: "http://api.example.com", proto: ProtoHTTP, host: "api.example.com", port: 80},
		{in: "https://api.example.com:8443/", proto: ProtoHTTPS, host: "api.example.com", port: 8443},
		{in: "http://[2001:db8::1]:8080/", proto: ProtoHTTP, host: "2001:db8::1", port: 8080},
		{in: "db.example.com:5432", proto: ProtoTCP, host: "db.example.com", port: 5432},
		{in: "[2001:db8::1]:22", proto: ProtoTCP, host: "2001:db8::1", port: 22},
		{in: "ftp://example.com/", wantErrSub: `scheme "ftp"`},
		{in: "https://user:pw@example.com/", wantErrSub: "--header"},
		{in: "https://example.com:99999/", wantErrSub: "1 to 65535"},
		{in: "https://example.com:/", wantErrSub: "empty port"},
		{in: "https:///path", wantErrSub: "no host"},
		{in: "example.com", wantErrSub: "neither a URL nor HOST:PORT"},
		{in: "example.com:0", wantErrSub: "1 to 65535"},
		{in: ":22", wantErrSub: "no host"},
		{in: "[fe80::1%eth0]:22", wantErrSub: "zone"},
	} {
		tg, err := ParseTarget(tc.in)
		if tc.wantErrSub != "" {
			var ie *InputError
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), tc.wantErrSub) {
				t.Errorf("ParseTarget(%q) = %v, want an InputError holding %q", tc.in, err, tc.wantErrSub)
			}
			continue
		}
		if err != nil || tg.Protocol != tc.proto || tg.Host != tc.host || tg.Port != tc.port {
			t.Errorf("ParseTarget(%q) = %+v, %v; want %s %s %d", tc.in, tg, err, tc.proto, tc.host, tc.port)
		}
	}
}

func TestParseFlags(t *testing.T) {
	a := map[string]string{}
	for _, tc := range []struct{ in, want string }{
		{"io.gondolin.net.allow=api.example.com", ""},
		{"io.gondolin.net.allow=other", "given twice"},
		{"net.allow=x", "only io.gondolin.* keys"},
		{"io.gondolin.net.mode", "KEY=VALUE"},
		{"=x", "KEY=VALUE"},
	} {
		err := ParseAnnotation(a, tc.in)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseAnnotation(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
	if a["io.gondolin.net.allow"] != "api.example.com" {
		t.Errorf("annotations %v", a)
	}
	h := http.Header{}
	for _, tc := range []struct{ in, want string }{
		{"Authorization: Bearer x", ""},
		{"X-Empty:", ""},
		{"no colon", "'Name: value'"},
		{"Bad Name: x", "'Name: value'"},
		{"Host: evil.example", "Host"},
	} {
		err := ParseHeader(h, tc.in)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseHeader(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
	if h.Get("Authorization") != "Bearer x" {
		t.Errorf("headers %v", h)
	}
	for m, ok := range map[string]bool{"GET": true, "PROPFIND": true, "": false, "GE T": false} {
		if err := CheckMethod(m); (err == nil) != ok {
			t.Errorf("CheckMethod(%q) = %v", m, err)
		}
	}
}

// The text names the decision, rule and hint first; the JSON has the
// same fields for machines.
func TestRender(t *testing.T) {
	env, _ := testEnv()
	rep, err := Evaluate(context.Background(), loadConfig(t, ""), Query{
		Target:      mustTarget(t, "https://other.example.com/"),
		Annotations: ann("net.allow=api.example.com", "net.dns=open", "secret.TOKEN=api.example.com"),
	}, env)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	for i, prefix := range []string{"denied    GET https://other.example.com/", "rule      other.example.com:443 is not in", "hint      To allow it", "policy    mode policy; dns open; allow api.example.com", "dns       allowed", "connect   allowed", "request   denied", "secret    TOKEN → https://api.example.com: not-sent"} {
		if !strings.HasPrefix(lines[i], prefix) {
			t.Fatalf("line %d %q, want %q:\n%s", i, lines[i], prefix, b.String())
		}
	}
	b.Reset()
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["decision"] != "denied" || got["allowed"] != false || !strings.Contains(got["hint"].(string), "io.gondolin.net.allow") || len(got["steps"].([]any)) != 3 {
		t.Fatalf("JSON:\n%s", b.String())
	}
}
