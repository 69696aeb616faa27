package oci

import (
	"net/netip"
	"strings"
	"testing"
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
	}, DefaultConfig("/b"))
	if err != nil {
		t.Fatal(err)
	}
	if s.NetMode != NetModeOpen || s.DNS != DNSTrusted || s.MemoryMiB != 1024 || s.CPUs != 2 {
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
	s, err := ParseAnnotations(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.NetMode != NetModePolicy || s.DNS != DNSSynthetic || s.MemoryMiB != 0 {
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
	} {
		_, err := ParseAnnotations(map[string]string{tc.key: tc.value}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%q: got %v, want error containing %q", tc.key, tc.value, err, tc.want)
		}
	}
}

func TestAnnotationsRestrictedByConfig(t *testing.T) {
	cfg := DefaultConfig("/b")
	cfg.AllowedAnnotations = []string{"io.gondolin.vm.*", "io.gondolin.net.dns"}
	if _, err := ParseAnnotations(map[string]string{"io.gondolin.vm.memory": "1G", "io.gondolin.net.dns": "open"}, cfg); err != nil {
		t.Fatalf("allowed annotations refused: %v", err)
	}
	_, err := ParseAnnotations(map[string]string{"io.gondolin.net.mode": "open"}, cfg)
	if err == nil || !strings.Contains(err.Error(), "io.gondolin.net.mode is not allowed by the runtime config") {
		t.Fatalf("got %v", err)
	}
}

// Secret hosts take an optional scheme: none or https:// binds the secret
// to HTTPS (port 443 unless named), http:// to plain HTTP (port 80 unless
// named).
func TestParseSecretHosts(t *testing.T) {
	for in, want := range map[string]string{
		"api.example.com":                     "https://api.example.com",
		"HTTPS://Api.Example.com:8443":        "https://api.example.com:8443",
		"http://api.example.com":              "http://api.example.com",
		"http://[2001:db8::1]:8080, *.x.test": "http://[2001:db8::1]:8080,https://*.x.test",
		"http://10.0.0.1":                     "http://10.0.0.1",
	} {
		hosts, err := parseSecretHosts(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		var got []string
		for _, h := range hosts {
			got = append(got, h.String())
		}
		if strings.Join(got, ",") != want {
			t.Errorf("%q = %s, want %s", in, strings.Join(got, ","), want)
		}
	}
	for in, port := range map[string]uint16{"a.com": 443, "https://a.com": 443, "http://a.com": 80, "http://a.com:81": 81, "a.com:8443": 8443} {
		hosts, _ := parseSecretHosts(in)
		if len(hosts) != 1 || hosts[0].DefaultPort() != port {
			t.Errorf("%q: port %v, want %d", in, hosts, port)
		}
	}
	for _, bad := range []string{"", "ftp://a.com", "https://", "http://a.com/x", "http://u:p@a.com", "a.com?q", "a.com#f", "http://http://a.com", "://a.com", "http:/a.com", "http//a.com:80"} {
		if _, err := parseSecretHosts(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseSecretHosts(f *testing.F) {
	for _, s := range []string{"api.example.com", "http://a.b:80", "https://[::1]:443", "*.x.test,http://y", "ftp://x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		hosts, err := parseSecretHosts(in)
		if err != nil {
			return
		}
		for _, h := range hosts {
			if h.Scheme != SchemeHTTP && h.Scheme != SchemeHTTPS {
				t.Fatalf("%q: scheme %q", in, h.Scheme)
			}
			if h.DefaultPort() == 0 {
				t.Fatalf("%q: no port", in)
			}
			// What String prints parses back to the same pattern.
			again, err := parseSecretHosts(h.String())
			if err != nil || len(again) != 1 || again[0] != h {
				t.Fatalf("%q: %s reparsed as %v, %v", in, h, again, err)
			}
		}
	})
}
