package container

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// mountRoot returns a directory for a test that mounts below it; whatever
// is mounted there is unmounted when the test ends (before the directory
// is removed).
func mountRoot(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	root := t.TempDir()
	t.Cleanup(func() {
		if err := unmountAll(root); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return root
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mustBeReadonly checks p cannot be written.
func mustBeReadonly(t *testing.T, p string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err == nil {
		f.Close()
		t.Errorf("%s can be written", p)
	} else if !errors.Is(err, unix.EROFS) {
		t.Errorf("open %s for writing: %v, want EROFS", p, err)
	}
}

func TestSetupCABundleOverImageStores(t *testing.T) {
	root := mountRoot(t)
	rootfs, dir := filepath.Join(root, "rootfs"), filepath.Join(root, "files")
	mkfile(t, rootfs, "etc/ssl/certs/ca-certificates.crt", "IMAGE")
	mklink(t, rootfs, "etc/ssl/cert.pem", "certs/ca-certificates.crt")
	mkfile(t, rootfs, "etc/pki/tls/cacert.pem", "OLD")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	extra := testCertPEM(t, "proxy")

	p, err := setupCABundle(rootfs, dir, extra, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p != "/etc/ssl/certs/ca-certificates.crt" {
		t.Errorf("bundle path %q", p)
	}
	want := "IMAGE\n" + string(extra)
	for _, f := range []string{"etc/ssl/certs/ca-certificates.crt", "etc/pki/tls/cacert.pem"} {
		if got := readFile(t, filepath.Join(rootfs, f)); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
		mustBeReadonly(t, filepath.Join(rootfs, f))
	}
	// The image's files are untouched below the binds.
	if err := unmountAll(root); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(rootfs, "etc/ssl/certs/ca-certificates.crt")); got != "IMAGE" {
		t.Errorf("image bundle changed to %q", got)
	}
	if got := readFile(t, filepath.Join(rootfs, "etc/pki/tls/cacert.pem")); got != "OLD" {
		t.Errorf("image cacert.pem changed to %q", got)
	}
}

func TestSetupCABundleFallback(t *testing.T) {
	root := mountRoot(t)
	rootfs, dir := filepath.Join(root, "rootfs"), filepath.Join(root, "files")
	for _, d := range []string{filepath.Join(rootfs, "run"), filepath.Join(rootfs, "tmp"), dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	extra := testCertPEM(t, "proxy")
	mounts := []*api.Mount{{Destination: "/run", Type: "tmpfs", Source: "tmpfs"}}

	// The spec names a tmpfs on /run that is not mounted: nothing is
	// written to the root, the bundle is skipped.
	if p, err := setupCABundle(rootfs, dir, extra, mounts); p != "" || err != nil {
		t.Fatalf("without the tmpfs: %q, %v", p, err)
	}
	if _, err := os.Stat(filepath.Join(rootfs, "run/gondolin")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("written to the root: %v", err)
	}

	// No tmpfs in the spec: skipped.
	if p, err := setupCABundle(rootfs, dir, extra, nil); p != "" || err != nil {
		t.Fatalf("no tmpfs: %q, %v", p, err)
	}

	if err := unix.Mount("tmpfs", filepath.Join(rootfs, "run"), "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	p, err := setupCABundle(rootfs, dir, extra, mounts)
	if err != nil {
		t.Fatal(err)
	}
	if p != "/run/gondolin/ca-certificates.crt" {
		t.Fatalf("bundle path %q", p)
	}
	target := filepath.Join(rootfs, p)
	if got := readFile(t, target); got != string(extra) {
		t.Errorf("bundle = %q", got)
	}
	mustBeReadonly(t, target)
}

func TestSetupResolvConf(t *testing.T) {
	const content = "nameserver 192.0.2.1\n"
	cases := []struct {
		name   string
		layout func(t *testing.T, rootfs string)
		mounts []*api.Mount
		// shown is where the content must be (below rootfs), "" for
		// nowhere; kept is the file below it afterwards.
		shown, kept string
		err         string
	}{
		{"over the image's file", func(t *testing.T, rootfs string) {
			mkfile(t, rootfs, "etc/resolv.conf", "nameserver 10.0.0.1\n")
		}, nil, "etc/resolv.conf", "nameserver 10.0.0.1\n", ""},
		{"missing: an empty mount point", func(t *testing.T, rootfs string) {}, nil, "etc/resolv.conf", "", ""},
		{"dangling absolute symlink", func(t *testing.T, rootfs string) {
			mklink(t, rootfs, "etc/resolv.conf", "/run/systemd/resolve/stub-resolv.conf")
		}, nil, "run/systemd/resolve/stub-resolv.conf", "", ""},
		{"symlink leaving the root", func(t *testing.T, rootfs string) {
			mklink(t, rootfs, "etc/resolv.conf", "../../../../../../../../etc/hostname.gondolin-test")
		}, nil, "etc/hostname.gondolin-test", "", ""},
		{"the spec mounts it", func(t *testing.T, rootfs string) {
			mkfile(t, rootfs, "etc/hosts", "")
		}, []*api.Mount{{Destination: "/etc/resolv.conf", Type: "bind", Source: "/x"}}, "", "", ""},
		{"a directory", func(t *testing.T, rootfs string) {
			if err := os.MkdirAll(filepath.Join(rootfs, "etc/resolv.conf"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, nil, "", "", "is not a regular file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := mountRoot(t)
			rootfs, dir := filepath.Join(root, "rootfs"), filepath.Join(root, "files")
			for _, d := range []string{rootfs, dir} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			c.layout(t, rootfs)
			err := setupResolvConf(rootfs, dir, content, c.mounts)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.shown == "" {
				if _, err := os.Lstat(filepath.Join(rootfs, "etc/resolv.conf")); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("/etc/resolv.conf was made: %v", err)
				}
				return
			}
			target := filepath.Join(rootfs, c.shown)
			if got := readFile(t, target); got != content {
				t.Errorf("%s = %q", c.shown, got)
			}
			mustBeReadonly(t, target)
			if err := unmountAll(root); err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, target); got != c.kept {
				t.Errorf("below the bind: %q, want %q", got, c.kept)
			}
		})
	}
	if _, err := os.Stat("/etc/hostname.gondolin-test"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file was made outside the root: %v", err)
	}
}

// setupAgentFiles records the bundle's environment for the container's
// processes; teardown's steps remove everything.
func TestSetupAgentFiles(t *testing.T) {
	root := mountRoot(t)
	c := &Container{ID: "c1", rootfs: filepath.Join(root, "rootfs"), files: filepath.Join(root, "files", "c1")}
	mkfile(t, c.rootfs, "etc/ssl/certs/ca-certificates.crt", "IMAGE\n")
	certs, err := parseCAPEM(testCertPEM(t, "proxy"))
	if err != nil {
		t.Fatal(err)
	}
	req := &api.CreateContainerRequest{ResolvConf: "nameserver 192.0.2.1\n"}
	if err := setupAgentFiles(c, req, certs); err != nil {
		t.Fatal(err)
	}
	if want := caEnv("/etc/ssl/certs/ca-certificates.crt"); !reflect.DeepEqual(c.env, want) {
		t.Errorf("env = %q, want %q", c.env, want)
	}
	if got := readFile(t, filepath.Join(c.rootfs, "etc/resolv.conf")); got != req.ResolvConf {
		t.Errorf("resolv.conf = %q", got)
	}
	if err := unmountAll(root); err != nil {
		t.Fatal(err)
	}
	if err := removeAgentFiles(c.files); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.files); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind: %v", c.files, err)
	}

	// Neither asked for: nothing is made.
	c2 := &Container{ID: "c2", rootfs: c.rootfs, files: filepath.Join(root, "files", "c2")}
	if err := setupAgentFiles(c2, &api.CreateContainerRequest{}, nil); err != nil || c2.env != nil {
		t.Fatalf("nothing asked: %v, env %q", err, c2.env)
	}
	if _, err := os.Stat(c2.files); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s made: %v", c2.files, err)
	}
}
