package oci

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/earendil-works/gondolin-containerd/policy"
)

func TestParseAnnotations(t *testing.T) {
	s, err := ParseAnnotations(map[string]string{
		"io.gondolin.net.mode":            "open",
		"io.gondolin.net.allow":           "api.github.com, *.npmjs.org:443,10.1.2.3,[2001:db8::1]:8443",
		"io.gondolin.net.allow-internal":  "10.0.0.0/8,db.internal:5432",
		"io.gondolin.net.dns":             "trusted",
		"io.gondolin.net.tcp-allow":       "git.example.com:22",
		"io.gondolin.secret.GITHUB_TOKEN": "api.github.com",
		"io.gondolin.vm.memory":           "1G",
		"io.gondolin.vm.cpus":             "2",
		"org.example.other":               "ignored",
	}, Operator{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode != policy.NetModeOpen || s.DNS != policy.DNSTrusted || s.MemoryMiB != 1024 || s.CPUs != 2 {
		t.Fatalf("scalars wrong: %+v", s)
	}
	var allow []string
	for _, p := range s.Allow {
		allow = append(allow, p.String())
	}
	if got := strings.Join(allow, ","); got != "api.github.com,*.npmjs.org:443,10.1.2.3,[2001:db8::1]:8443" {
		t.Errorf("allow = %s", got)
	}
	if len(s.AllowInternalRanges) != 1 || s.AllowInternalRanges[0] != netip.MustParsePrefix("10.0.0.0/8") {
		t.Errorf("internal ranges = %v", s.AllowInternalRanges)
	}
	if len(s.TCPAllow) != 1 || s.TCPAllow[0].Port != 22 {
		t.Errorf("tcp-allow = %v", s.TCPAllow)
	}
	if hosts := s.Secrets["GITHUB_TOKEN"]; len(hosts) != 1 || hosts[0].Host != "api.github.com" {
		t.Errorf("secrets = %v", s.Secrets)
	}
}

func TestParseAnnotationsDefaults(t *testing.T) {
	s, err := ParseAnnotations(nil, Operator{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode != policy.NetModePolicy || s.DNS != policy.DNSSynthetic || s.MemoryMiB != 0 {
		t.Fatalf("defaults wrong: %+v", s)
	}
}

func TestParseAnnotationsErrors(t *testing.T) {
	for _, tc := range []struct {
		key, value, want string
	}{
		{"io.gondolin.net.mode", "wide", `io.gondolin.net.mode="wide" is invalid; accepted: policy, open or none`},
		{"io.gondolin.net.dns", "google", "synthetic, trusted or open"},
		{"io.gondolin.net.allow", "exa mple.com", "not a valid DNS label"},
		{"io.gondolin.net.allow", "*.*.com", "is not a host name"},
		{"io.gondolin.net.allow", "a.com:99999", "port"},
		{"io.gondolin.net.allow", " , ", "empty"},
		{"io.gondolin.net.tcp-allow", "db.example.com", "has no port"},
		{"io.gondolin.net.allow-internal", "10.0.0.0/33", "not a CIDR range"},
		{"io.gondolin.secret.1TOKEN", "a.com", "not an environment variable name"},
		{"io.gondolin.secret.TOKEN", "", "hosts the secret may be sent to"},
		{"io.gondolin.vm.memory", "lots", "at least 64 MiB"},
		{"io.gondolin.vm.memory", "32M", "below the minimum"},
		{"io.gondolin.vm.cpus", "0", "1 to 255"},
		{"io.gondolin.vm.gpu", "1", "is not known; gondolin accepts"},
		{"io.gondolin.group", "../x", "1 to 76 letters"},
		{"io.gondolin.group", "", "1 to 76 letters"},
	} {
		_, err := ParseAnnotations(map[string]string{tc.key: tc.value}, Operator{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%q: got %v, want error containing %q", tc.key, tc.value, err, tc.want)
		}
	}
}

func TestAnnotationsRestrictedByConfig(t *testing.T) {
	cfg := Operator{AllowedAnnotations: []string{"io.gondolin.vm.*", "io.gondolin.net.dns"}}
	if _, err := ParseAnnotations(map[string]string{"io.gondolin.vm.memory": "1G", "io.gondolin.net.dns": "open"}, cfg); err != nil {
		t.Fatalf("allowed annotations refused: %v", err)
	}
	_, err := ParseAnnotations(map[string]string{"io.gondolin.net.mode": "open"}, cfg)
	if err == nil || !strings.Contains(err.Error(), "io.gondolin.net.mode is not allowed by the runtime config") {
		t.Fatalf("got %v", err)
	}
}

// io.gondolin.group is the shim manager's; the parser accepts and checks
// it so a pod that sets it is not refused.
func TestParseAnnotationsGroup(t *testing.T) {
	s, err := ParseAnnotations(map[string]string{AnnotationGroup: "pod-1.a_b"}, Operator{})
	if err != nil || s.Group != "pod-1.a_b" {
		t.Fatalf("group: %+v, %v", s, err)
	}
}
