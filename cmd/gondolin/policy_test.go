package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// policyConfig is a runtime config whose names resolve without DNS
// (upstream_hosts), with a named policy and a default.
func policyConfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	err := os.WriteFile(path, []byte(`
[upstream_hosts]
"api.x.test" = ["127.0.0.1"]
[policies.api]
allow = "api.x.test:8443"
[policies.api.secrets]
TOKEN = "api.x.test:8443"
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// policy test's statuses: 0 allowed, 1 denied, 2 bad input, each with the
// report (or the error) where a script looks for it.
func TestPolicyTestStatus(t *testing.T) {
	cfg := policyConfig(t)
	for _, tc := range []struct {
		name   string
		args   []string
		status int
		stdout []string
		stderr string
	}{
		{"allowed by a named policy", []string{"test", "--annotation", "io.gondolin.policy=api", "https://api.x.test:8443/v1"}, exitOK,
			[]string{"allowed   GET https://api.x.test:8443/v1", "rule      host in io.gondolin.net.allow", "secret    TOKEN → https://api.x.test:8443: substituted"}, ""},
		{"denied host", []string{"test", "--annotation", "io.gondolin.policy=api", "https://other.test/"}, exitDenied,
			[]string{"denied    GET https://other.test/", "rule      name not in io.gondolin.net.allow"}, ""},
		{"denied port names the fix", []string{"test", "--annotation", "io.gondolin.policy=api", "https://api.x.test/"}, exitDenied,
			[]string{"hint      allow it with io.gondolin.net.allow=api.x.test:443"}, ""},
		{"flags after the target", []string{"test", "https://api.x.test:8443/", "--annotation", "io.gondolin.net.allow=api.x.test:8443", "--method", "POST", "--header", "Content-Type: text/plain"}, exitOK,
			[]string{"allowed   POST https://api.x.test:8443/"}, ""},
		{"raw TCP only inspected", []string{"test", "--annotation", "io.gondolin.policy=api", "api.x.test:8443"}, exitDenied,
			[]string{"inspected api.x.test:8443"}, ""},
		{"bad URL", []string{"test", "ftp://x/"}, exitUsage, nil, `scheme "ftp"`},
		{"bad annotation", []string{"test", "--annotation", "io.gondolin.net.mode=closed", "https://api.x.test/"}, exitUsage, nil, "policy, open or none"},
		{"annotation without io.gondolin", []string{"test", "--annotation", "net.allow=x", "https://api.x.test/"}, exitUsage, nil, "only io.gondolin.* keys"},
		{"undefined policy", []string{"test", "--annotation", "io.gondolin.policy=npm", "https://api.x.test/"}, exitUsage, nil, `policy "npm" is not defined`},
		{"bad header", []string{"test", "--header", "nocolon", "https://api.x.test/"}, exitUsage, nil, "'Name: value'"},
		{"header for raw TCP", []string{"test", "--header", "A: b", "api.x.test:22"}, exitUsage, nil, "give a URL"},
		{"no target", []string{"test"}, exitUsage, nil, "one URL or HOST:PORT"},
		{"no subcommand", nil, exitUsage, nil, "policy has one subcommand"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"policy"}, tc.args...), "--config", cfg)
			out, errOut, status := runArgs(t, args...)
			if status != tc.status {
				t.Fatalf("status %d, want %d\nstdout:\n%s\nstderr:\n%s", status, tc.status, out, errOut)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(out, want) {
					t.Fatalf("stdout lacks %q:\n%s", want, out)
				}
			}
			if !strings.Contains(errOut, tc.stderr) {
				t.Fatalf("stderr lacks %q:\n%s", tc.stderr, errOut)
			}
		})
	}
}

func TestPolicyTestBadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte("[policies.x]\nmode = \"closed\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, status := runArgs(t, "policy", "test", "--config", path, "https://api.x.test/")
	if status != exitUsage || !strings.Contains(errOut, "policies.x.mode") || !strings.Contains(errOut, path) {
		t.Fatalf("status %d, stderr %q", status, errOut)
	}
	_, errOut, status = runArgs(t, "policy", "test", "--config", path+".missing", "https://api.x.test/")
	if status != exitUsage || !strings.Contains(errOut, ".missing") {
		t.Fatalf("status %d, stderr %q", status, errOut)
	}
}

func TestPolicyTestJSON(t *testing.T) {
	out, _, status := runArgs(t, "policy", "test", "--json", "--config", policyConfig(t), "--annotation", "io.gondolin.policy=api", "https://api.x.test:8443/")
	var rep struct {
		Decision string `json:"decision"`
		Allowed  bool   `json:"allowed"`
		Steps    []struct {
			Step string `json:"step"`
		} `json:"steps"`
		Secrets []struct {
			Name, Outcome string
		} `json:"secrets"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || status != exitOK {
		t.Fatalf("status %d, %v:\n%s", status, err, out)
	}
	if rep.Decision != "allowed" || !rep.Allowed || len(rep.Steps) != 3 || rep.Steps[2].Step != "request" || len(rep.Secrets) != 1 || rep.Secrets[0].Outcome != "substituted" {
		t.Fatalf("%+v", rep)
	}
}
