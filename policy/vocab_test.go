package policy

import (
	"strings"
	"testing"
)

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
		hosts, err := ParseSecretHosts(in)
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
		hosts, _ := ParseSecretHosts(in)
		if len(hosts) != 1 || hosts[0].DefaultPort() != port {
			t.Errorf("%q: port %v, want %d", in, hosts, port)
		}
	}
	for _, bad := range []string{"", "1.2.3.4.", "https://0.0.0.0.", "a.b.123", "ftp://a.com", "https://", "http://a.com/x", "http://u:p@a.com", "a.com?q", "a.com#f", "http://http://a.com", "://a.com", "http:/a.com", "http//a.com:80"} {
		if _, err := ParseSecretHosts(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseSecretHosts(f *testing.F) {
	for _, s := range []string{"api.example.com", "http://a.b:80", "https://[::1]:443", "*.x.test,http://y", "ftp://x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		hosts, err := ParseSecretHosts(in)
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
			again, err := ParseSecretHosts(h.String())
			if err != nil || len(again) != 1 || again[0] != h {
				t.Fatalf("%q: %s reparsed as %v, %v", in, h, again, err)
			}
		}
	})
}
