package container

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// testCertPEM makes a self-signed CA certificate.
func testCertPEM(t *testing.T, name string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestParseCAPEM(t *testing.T) {
	a, b := testCertPEM(t, "a"), testCertPEM(t, "b")
	if got, err := parseCAPEM(nil); got != nil || err != nil {
		t.Fatalf("empty: %q, %v", got, err)
	}
	// Text around blocks and CRLF line endings are fine; the output is
	// the blocks alone, re-encoded.
	crlf := bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
	in := append(append([]byte("subject=CN = a\n"), a...), append([]byte("\n# b\n"), crlf...)...)
	got, err := parseCAPEM(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(append([]byte(nil), a...), b...); !bytes.Equal(got, want) {
		t.Fatalf("parseCAPEM =\n%s\nwant\n%s", got, want)
	}

	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	truncated := a[:len(a)-30]
	broken := bytes.Replace(a, []byte("-----END CERTIFICATE-----"), []byte("-----END CERT-----"), 1)
	for name, c := range map[string]struct {
		in   []byte
		want string
	}{
		"no PEM":               {[]byte("hello"), "no PEM CERTIFICATE block"},
		"private key":          {append(append([]byte(nil), a...), key...), `block 2 is a "PRIVATE KEY"`},
		"truncated last":       {append(append([]byte(nil), a...), truncated...), "1 of its 2 PEM blocks are malformed"},
		"broken in the middle": {append(append([]byte(nil), broken...), b...), "1 of its 2 PEM blocks are malformed"},
	} {
		if _, err := parseCAPEM(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
}

func TestMergeBundle(t *testing.T) {
	extra := []byte("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n")
	for _, c := range []struct{ image, want string }{
		{"", string(extra)},
		{"IMAGE\n", "IMAGE\n" + string(extra)},
		{"IMAGE", "IMAGE\n" + string(extra)}, // no newline at its end
	} {
		if got := string(mergeBundle([]byte(c.image), extra)); got != c.want {
			t.Errorf("mergeBundle(%q) = %q, want %q", c.image, got, c.want)
		}
	}
}

func TestAddEnvDefaults(t *testing.T) {
	defaults := caEnv("/etc/ssl/certs/ca-certificates.crt")
	if want := []string{
		"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
		"REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
		"CURL_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
		"NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
	}; !reflect.DeepEqual(defaults, want) {
		t.Fatalf("caEnv = %q", defaults)
	}
	env := make([]string, 3, 10) // room to append: must not be written to
	copy(env, []string{"PATH=/bin", "SSL_CERT_FILE=/mine.pem", "CURL_CA_BUNDLE="})
	got := addEnvDefaults(env, defaults)
	want := []string{
		"PATH=/bin", "SSL_CERT_FILE=/mine.pem", "CURL_CA_BUNDLE=", // the process's own win, even empty
		"REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
		"NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("addEnvDefaults = %q\nwant %q", got, want)
	}
	if env[:4][3] != "" {
		t.Fatalf("addEnvDefaults wrote into the caller's array: %q", env[:4])
	}
	if got := addEnvDefaults([]string{"A=1"}, nil); !reflect.DeepEqual(got, []string{"A=1"}) {
		t.Fatalf("no defaults: %q", got)
	}
}

// mkfile makes root/p (and its directories) with content.
func mkfile(t *testing.T, root, p, content string) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mklink(t *testing.T, root, p, target string) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, full); err != nil {
		t.Fatal(err)
	}
}

// storePaths lists what findTrustStores found as "listed path -> path in
// the container".
func storePaths(root string, stores []trustStore) []string {
	var out []string
	for _, s := range stores {
		out = append(out, s.path+" -> "+containerPath(root, s.target))
	}
	return out
}

func TestFindTrustStores(t *testing.T) {
	cases := []struct {
		name   string
		layout func(t *testing.T, root string)
		want   []string
	}{
		{"debian", func(t *testing.T, root string) {
			mkfile(t, root, "etc/ssl/certs/ca-certificates.crt", "debian")
		}, []string{"/etc/ssl/certs/ca-certificates.crt -> /etc/ssl/certs/ca-certificates.crt"}},
		{"alpine", func(t *testing.T, root string) {
			mkfile(t, root, "etc/ssl/certs/ca-certificates.crt", "alpine")
			mklink(t, root, "etc/ssl/cert.pem", "certs/ca-certificates.crt")
		}, []string{"/etc/ssl/certs/ca-certificates.crt -> /etc/ssl/certs/ca-certificates.crt"}},
		{"fedora", func(t *testing.T, root string) {
			mkfile(t, root, "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", "fedora")
			mklink(t, root, "etc/pki/tls/certs/ca-bundle.crt", "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem")
			mklink(t, root, "etc/pki/tls/cert.pem", "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem")
			mklink(t, root, "etc/ssl/certs", "../pki/tls/certs")
		}, []string{"/etc/pki/tls/certs/ca-bundle.crt -> /etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"}},
		{"two files", func(t *testing.T, root string) {
			mkfile(t, root, "etc/ssl/certs/ca-certificates.crt", "one")
			mkfile(t, root, "etc/ssl/cert.pem", "two")
		}, []string{
			"/etc/ssl/certs/ca-certificates.crt -> /etc/ssl/certs/ca-certificates.crt",
			"/etc/ssl/cert.pem -> /etc/ssl/cert.pem",
		}},
		{"links that leave the root stay in it", func(t *testing.T, root string) {
			mklink(t, root, "etc/ssl/cert.pem", "../../../../../../etc/ssl/certs/ca-certificates.crt")
			mklink(t, root, "etc/ssl/ca-bundle.pem", "/etc/pki/tls/cacert.pem")
			mkfile(t, root, "etc/pki/tls/cacert.pem", "old rhel")
		}, []string{"/etc/pki/tls/cacert.pem -> /etc/pki/tls/cacert.pem"}},
		{"dangling links, directories, devices are skipped", func(t *testing.T, root string) {
			mklink(t, root, "etc/ssl/certs/ca-certificates.crt", "/nowhere")
			if err := os.MkdirAll(filepath.Join(root, "etc/ssl/cert.pem"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mknod(filepath.Join(root, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
				t.Skipf("mknod: %v", err)
			}
			mklink(t, root, "etc/ssl/ca-bundle.pem", "/dev/null")
			mkfile(t, root, "etc/pki", "") // a file: the paths below it cannot exist
		}, nil},
		{"none", func(t *testing.T, root string) {}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			c.layout(t, root)
			if got := storePaths(root, findTrustStores(root)); !reflect.DeepEqual(got, c.want) {
				t.Errorf("findTrustStores = %q\nwant %q", got, c.want)
			}
		})
	}
}

func TestCAFallbackPath(t *testing.T) {
	tmpfs := func(dest string) *api.Mount { return &api.Mount{Destination: dest, Type: "tmpfs", Source: "tmpfs"} }
	bind := func(dest string) *api.Mount { return &api.Mount{Destination: dest, Type: "bind", Source: "/x"} }
	for _, c := range []struct {
		mounts []*api.Mount
		want   string
	}{
		{nil, ""},
		{[]*api.Mount{tmpfs("/dev"), tmpfs("/run")}, "/run/gondolin/ca-certificates.crt"},
		{[]*api.Mount{tmpfs("/tmp"), tmpfs("run/")}, "/run/gondolin/ca-certificates.crt"},
		{[]*api.Mount{bind("/run"), tmpfs("/tmp")}, "/tmp/gondolin/ca-certificates.crt"},
		{[]*api.Mount{bind("/run"), tmpfs("/dev/shm")}, ""},
	} {
		if _, got := caFallbackPath(c.mounts); got != c.want {
			t.Errorf("caFallbackPath(%v) = %q, want %q", c.mounts, got, c.want)
		}
	}
}

func TestHasMountAt(t *testing.T) {
	mounts := []*api.Mount{{Destination: "/proc"}, {Destination: "etc/resolv.conf"}}
	if !hasMountAt(mounts, "/etc/resolv.conf") || hasMountAt(mounts, "/etc/hosts") || hasMountAt(nil, "/etc/resolv.conf") {
		t.Fatal("hasMountAt")
	}
}

func TestReadRegular(t *testing.T) {
	dir := t.TempDir()
	mkfile(t, dir, "f", "12345")
	if b, err := readRegular(filepath.Join(dir, "f"), 5); err != nil || string(b) != "12345" {
		t.Fatalf("readRegular = %q, %v", b, err)
	}
	if _, err := readRegular(filepath.Join(dir, "f"), 4); err == nil || !strings.Contains(err.Error(), "larger than 4 bytes") {
		t.Errorf("over the limit: %v", err)
	}
	mklink(t, dir, "link", "f")
	if _, err := readRegular(filepath.Join(dir, "link"), 5); err == nil {
		t.Error("a symlink was followed")
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readRegular(fifo, 5); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("fifo: %v", err)
	}
}

func TestContainerPath(t *testing.T) {
	for target, want := range map[string]string{
		"/r/rootfs":                  "/",
		"/r/rootfs/etc/ssl/cert.pem": "/etc/ssl/cert.pem",
	} {
		if got := containerPath("/r/rootfs", target); got != want {
			t.Errorf("containerPath(%q) = %q, want %q", target, got, want)
		}
	}
}
