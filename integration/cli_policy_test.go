//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// policyTestReport is what gondolin policy test --json says.
type policyTestReport struct {
	Decision string `json:"decision"`
	Allowed  bool   `json:"allowed"`
	Reason   string `json:"reason"`
	Secrets  []struct {
		Name    string `json:"name"`
		Outcome string `json:"outcome"`
	} `json:"secrets"`
}

// gondolin policy test agrees with what a real container gets: the same
// runtime config (a named policy with a secret, upstream_hosts) and the
// same annotations, and for each request the container's outcome (HTTP
// 200, or a refusal of the name, the connection or the request) is the
// tool's decision; a request carrying the secret's placeholder gets the
// value where the tool says substituted, and 403 where it says blocked.
func TestCLIPolicyTestAgreesWithContainer(t *testing.T) {
	bin := buildGondolinCLI(t)
	u := startUpstream(t)
	p := u.port
	cfg, _ := runtimeConfig(t, u, fmt.Sprintf(`
[policies.cli]
allow = ["api.x.test:%d", "other.test:%d"]
[policies.cli.secrets]
TOKEN = "api.x.test:%d"
`, p, p, p))
	annotations := []string{"io.gondolin.policy=cli", fmt.Sprintf("io.gondolin.net.tcp-allow=tcp.x.test:%d", p)}

	type request struct {
		name   string
		url    string
		secret bool // carries $TOKEN in an Authorization header
		// insecure: the TLS is the upstream's own (a raw relay), which
		// the guest does not trust.
		insecure bool
		// want is the container's expected outcome, which the tool must
		// match anyway; it keeps the test from passing when both are
		// wrong alike.
		want bool
	}
	requests := []request{
		{name: "allowed", url: fmt.Sprintf("https://api.x.test:%d/plain", p), want: true},
		{name: "secret-bound", url: fmt.Sprintf("https://api.x.test:%d/secret", p), secret: true, want: true},
		{name: "secret-other-host", url: fmt.Sprintf("https://other.test:%d/leak", p), secret: true, want: false},
		{name: "denied-host", url: fmt.Sprintf("https://a.x.test:%d/", p), want: false},
		{name: "denied-port", url: "https://api.x.test/", want: false},
		{name: "raw-tcp-allow", url: fmt.Sprintf("https://tcp.x.test:%d/raw", p), insecure: true, want: true},
	}

	var script strings.Builder
	for _, r := range requests {
		flags := "-s -o /dev/null -w '%{http_code}' --max-time 20"
		if r.secret {
			flags += ` -H "Authorization: Bearer $TOKEN"`
		}
		if r.insecure {
			flags += " -k"
		}
		fmt.Fprintf(&script, "echo \"%s $(curl %s %s)\"\n", r.name, flags, r.url)
	}
	res, _ := egressRun(t, cfg, annotations, []string{"TOKEN=" + testSecret}, script.String())
	if res.code != 0 {
		t.Fatalf("the container: %s", res)
	}
	codes := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(res.stdout), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			codes[f[0]] = f[1]
		}
	}
	t.Logf("the container's requests: %v; the upstream saw %v", codes, u.seen())

	for _, r := range requests {
		args := []string{"policy", "test", "--json", "--config", cfg}
		for _, a := range annotations {
			args = append(args, "--annotation", a)
		}
		tool := command(t, nil, bin, append(args, r.url)...)
		var rep policyTestReport
		if err := json.Unmarshal([]byte(tool.stdout), &rep); err != nil {
			t.Fatalf("%s: gondolin policy test: %v: %s", r.name, err, tool)
		}
		if wantCode := map[bool]int{true: 0, false: 1}[rep.Allowed]; tool.code != wantCode {
			t.Errorf("%s: exit status %d with decision %s: %s", r.name, tool.code, rep.Decision, tool)
		}
		toolAllows := rep.Allowed
		if r.secret {
			// The guest's request carries the placeholder: the tool's
			// secret outcome decides whether it goes out.
			outcome := ""
			for _, s := range rep.Secrets {
				if s.Name == "TOKEN" {
					outcome = s.Outcome
				}
			}
			toolAllows = rep.Allowed && outcome == "substituted"
			if r.want && outcome != "substituted" || !r.want && rep.Allowed && outcome != "blocked" {
				t.Errorf("%s: the tool says TOKEN is %q: %s", r.name, outcome, tool.stdout)
			}
		}
		containerAllowed := codes[r.name] == "200"
		if containerAllowed != r.want {
			t.Errorf("%s: the container got %q, want allowed=%v", r.name, codes[r.name], r.want)
		}
		if toolAllows != containerAllowed {
			t.Errorf("%s: gondolin policy test says allowed=%v (%s: %s), the container got HTTP %q", r.name, toolAllows, rep.Decision, rep.Reason, codes[r.name])
		}
	}
	// The bound host got the value (the tool's "substituted"), and
	// nothing reached other.test (the tool's "blocked").
	var gotValue bool
	for _, s := range u.seen() {
		if strings.Contains(s, "/secret auth-ok") {
			gotValue = true
		}
		if strings.HasPrefix(s, "other.test") {
			t.Errorf("the upstream saw the blocked request: %s", s)
		}
	}
	if !gotValue {
		t.Errorf("the bound host did not get the secret's value: %v", u.seen())
	}
}
