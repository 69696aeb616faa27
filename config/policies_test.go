package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/earendil-works/gondolin-containerd/oci"
	"github.com/earendil-works/gondolin-containerd/policy"
)

const namedPolicies = `
[policies.npm]
allow = ["registry.npmjs.org", "*.npmjs.org"]
[policies.npm.secrets]
NPM_TOKEN = "registry.npmjs.org"

[policies.github]
allow = "api.github.com,github.com"
tcp_allow = ["github.com:22"]
[policies.github.secrets]
GITHUB_TOKEN = ["api.github.com"]
NPM_TOKEN = "npm.pkg.github.com"

[policies.open]
mode = "open"
`

// A container picks named policies; several merge, its own keys add to
// them, and the operator's default picks one for a container that names
// none.
func TestNamedPolicies(t *testing.T) {
	cfg := Default("/b")
	if err := parseConfig(cfg, namedPolicies+"\n[default_annotations]\n\"io.gondolin.policy\" = \"npm\"\n"); err != nil {
		t.Fatal(err)
	}
	s, err := oci.ParseAnnotations(map[string]string{oci.AnnotationPolicy: "npm, github", oci.AnnotationNetAllow: "extra.example.com"}, cfg.Operator())
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode != policy.NetModePolicy || s.DNS != policy.DNSSynthetic {
		t.Errorf("modes: %s %s", s.Mode, s.DNS)
	}
	if got := patterns(s.Allow); got != "registry.npmjs.org,*.npmjs.org,api.github.com,github.com,extra.example.com" {
		t.Errorf("allow = %s", got)
	}
	if got := patterns(s.TCPAllow); got != "github.com:22" {
		t.Errorf("tcp_allow = %s", got)
	}
	if got := patterns(s.Secrets["NPM_TOKEN"]); got != "https://registry.npmjs.org,https://npm.pkg.github.com" {
		t.Errorf("NPM_TOKEN hosts = %s", got)
	}
	// The default annotation applies when the container names none.
	s, err = oci.ParseAnnotations(nil, cfg.Operator())
	if err != nil || patterns(s.Allow) != "registry.npmjs.org,*.npmjs.org" {
		t.Fatalf("default policy: %+v, %v", s, err)
	}
	// The container's mode goes over the policy's.
	s, err = oci.ParseAnnotations(map[string]string{oci.AnnotationPolicy: "open", oci.AnnotationNetMode: "none"}, cfg.Operator())
	if err != nil || s.Mode != policy.NetModeNone {
		t.Fatalf("mode over a policy: %+v, %v", s, err)
	}
	// Unknown names are refused with the list of known ones.
	_, err = oci.ParseAnnotations(map[string]string{oci.AnnotationPolicy: "pypi"}, cfg.Operator())
	if err == nil || !strings.Contains(err.Error(), `policy "pypi" is not defined`) || !strings.Contains(err.Error(), "github, npm, open") {
		t.Fatalf("unknown policy: %v", err)
	}
	// allowed_annotations can hold containers to named policies alone.
	cfg.AllowedAnnotations = []string{oci.AnnotationPolicy}
	if _, err := oci.ParseAnnotations(map[string]string{oci.AnnotationPolicy: "github"}, cfg.Operator()); err != nil {
		t.Fatal(err)
	}
	if _, err := oci.ParseAnnotations(map[string]string{oci.AnnotationNetAllow: "evil.example"}, cfg.Operator()); err == nil {
		t.Fatal("a raw net.allow passed allowed_annotations = [io.gondolin.policy]")
	}
}

func TestNamedPolicyErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"[policies.a]\nallow = \"exa mple.com\"", "policies.a.allow: io.gondolin.net.allow=\"exa mple.com\" is invalid"},
		{"[policies.a]\nmode = \"wide\"", "policies.a.mode"},
		{"[policies.a]\nallow = [1]", "is not a string"},
		{"[policies.a]\nnope = 1", "unknown keys policies.a.nope"},
		{"[policies.\"a b\"]\nmode = \"open\"", `policies."a b": a policy name`},
		{"[policies.a.secrets]\n1X = \"a.com\"", "not an environment variable name"},
		{"[policies.a.secrets]\nX = []", "list at least one host"},
		{"[policies.a]\nmode = \"open\"\n[policies.b]\nmode = \"none\"\n[default_annotations]\n\"io.gondolin.policy\" = \"a,b\"", "set different modes"},
		{"[default_annotations]\n\"io.gondolin.policy\" = \"missing\"", `policy "missing" is not defined`},
		{"[secrets.X]\nfile = \"/a\"\nenv = \"Y\"\nhosts = \"a.com\"", "set exactly one of file"},
		{"[secrets.X]\nhosts = \"a.com\"", "set exactly one of file"},
		{"[secrets.X]\nfile = \"rel\"\nhosts = \"a.com\"", "must be an absolute path"},
		{"[secrets.1X]\nenv = \"Y\"\nhosts = \"a.com\"", "not an environment variable name"},
		{"[secrets.X]\nenv = \"Y\"", "list the hosts the secret may be sent to"},
		{"[secrets.X]\nenv = \"Y\"\nhosts = \"ftp://a.com\"", "secrets.X.hosts"},
	} {
		err := parseConfig(Default("/b"), tc.text)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.text, err, tc.want)
		}
	}
}

// A secret's value comes from a host file only if nobody but its owner can
// read it; the error names the file, never the value.
func TestSecretValue(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	if err := os.WriteFile(good, []byte("s3cr3t-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(loose, []byte("s3cr3t-loose"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GONDOLIN_TEST_SECRET", "s3cr3t-from-env")
	cfg := Default("/b")
	var text string
	for name, src := range map[string]string{"A": "file = \"" + good + "\"", "B": "file = \"" + loose + "\"", "C": "env = \"GONDOLIN_TEST_SECRET\"",
		"D": "env = \"GONDOLIN_TEST_UNSET\"", "E": "file = \"" + link + "\"", "F": "file = \"" + filepath.Join(dir, "none") + "\""} {
		text += "[secrets." + name + "]\n" + src + "\nhosts = [\"api.example.com\", \"http://plain.example.com:8080\"]\n"
	}
	if err := parseConfig(cfg, text); err != nil {
		t.Fatal(err)
	}
	bound := hostList(t, "api.example.com")
	if v, ok, err := cfg.SecretValue("A", bound); v != "s3cr3t-from-file" || !ok || err != nil {
		t.Errorf("file: %q %v %v", v, ok, err)
	}
	if v, ok, err := cfg.SecretValue("C", hostList(t, "http://plain.example.com:8080,api.example.com")); v != "s3cr3t-from-env" || !ok || err != nil {
		t.Errorf("env: %q %v %v", v, ok, err)
	}
	if _, ok, err := cfg.SecretValue("Z", bound); ok || err != nil {
		t.Errorf("no source: %v %v", ok, err)
	}
	for name, want := range map[string]string{"B": "mode 0644", "D": "no GONDOLIN_TEST_UNSET", "E": "cannot open", "F": "cannot open"} {
		_, ok, err := cfg.SecretValue(name, bound)
		if !ok || err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "secret "+name) {
			t.Errorf("%s: %v %v, want %q", name, ok, err, want)
		} else if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%s: the error shows the value: %v", name, err)
		}
	}
}

// A container may bind a host-sourced secret only to the source's hosts
// (or a part of them): whoever writes its annotations could otherwise send
// the operator's token anywhere. The value is not read then.
func TestSecretValueBoundToSourceHosts(t *testing.T) {
	t.Setenv("GONDOLIN_TEST_SECRET", "s3cr3t-from-env")
	cfg := Default("/b")
	if err := parseConfig(cfg, "[secrets.T]\nenv = \"GONDOLIN_TEST_SECRET\"\nhosts = \"api.example.com,http://api.example.com\"\n"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"evil.example.com", "api.example.com:8443", "*.example.com", "http://api.example.com:8080", "api.example.com,evil.example.com"} {
		_, ok, err := cfg.SecretValue("T", hostList(t, bad))
		if !ok || err == nil || !strings.Contains(err.Error(), "secret T may not be sent to") || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%s: %v %v", bad, ok, err)
		}
	}
	if v, _, err := cfg.SecretValue("T", hostList(t, "http://api.example.com")); err != nil || v != "s3cr3t-from-env" {
		t.Errorf("a part of the source's hosts: %q %v", v, err)
	}
}

func hostList(t *testing.T, list string) []policy.HostPattern {
	t.Helper()
	hosts, err := policy.ParseSecretHosts(list)
	if err != nil {
		t.Fatal(err)
	}
	return hosts
}

func patterns(ps []policy.HostPattern) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return strings.Join(out, ",")
}
