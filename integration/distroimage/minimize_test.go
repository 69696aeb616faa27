package distroimage

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// listTree returns every path below root ("dir/" for directories), sorted.
func listTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			rel += "/"
		}
		out = append(out, rel)
		return nil
	})
	must(t, err)
	sort.Strings(out)
	return out
}

func TestMinimize(t *testing.T) {
	root := t.TempDir()
	outside := filepath.Join(t.TempDir(), "host-resolv.conf")
	writeTestFile(t, outside, "nameserver 10.0.0.1\n", 0o644)
	for _, f := range []string{
		"var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
		"var/lib/apt/lists/lock",
		"var/cache/apt/pkgcache.bin",
		"var/cache/apt/archives/curl_7.88.1_amd64.deb",
		"var/cache/apt/archives/lock",
		"usr/share/man/man1/curl.1.gz",
		"usr/share/info/dir",
		"usr/share/locale/de/LC_MESSAGES/dpkg.mo",
		"usr/share/locale/locale.alias",
		"usr/share/doc/curl/copyright",
		"usr/share/doc/curl/changelog.Debian.gz",
		"usr/share/doc/gcc-12-base/copyright",
		"var/cache/debconf/config.dat",
		"var/cache/debconf/config.dat-old",
		"var/lib/dpkg/status",
		"var/lib/dpkg/status-old",
		"etc/hostname",
		"etc/ssl/certs/ca-certificates.crt",
	} {
		writeTestFile(t, filepath.Join(root, f), "x", 0o644)
	}
	must(t, os.MkdirAll(filepath.Join(root, "var/lib/apt/lists/partial"), 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "var/cache/apt/archives/partial"), 0o755))
	must(t, os.Symlink("gcc-12-base", filepath.Join(root, "usr/share/doc/libgcc-s1")))
	writeTestFile(t, filepath.Join(root, "var/log/apt/history.log"), "Start-Date: today", 0o640)
	writeTestFile(t, filepath.Join(root, "var/log/wtmp"), "login records", 0o664)
	// A resolv.conf symlink must be replaced, not written through onto the host.
	must(t, os.Symlink(outside, filepath.Join(root, "etc/resolv.conf")))

	must(t, minimize(root))

	want := []string{
		"etc/", "etc/dpkg/", "etc/dpkg/dpkg.cfg.d/", "etc/dpkg/dpkg.cfg.d/gondolin-minimal",
		"etc/resolv.conf", "etc/ssl/", "etc/ssl/certs/", "etc/ssl/certs/ca-certificates.crt",
		"usr/", "usr/share/", "usr/share/doc/", "usr/share/doc/curl/", "usr/share/doc/curl/copyright",
		"usr/share/doc/gcc-12-base/", "usr/share/doc/gcc-12-base/copyright", "usr/share/doc/libgcc-s1",
		"usr/share/info/", "usr/share/locale/", "usr/share/locale/locale.alias", "usr/share/man/",
		"var/", "var/cache/", "var/cache/apt/", "var/cache/apt/archives/", "var/cache/apt/archives/lock",
		"var/cache/apt/archives/partial/", "var/cache/debconf/", "var/cache/debconf/config.dat",
		"var/lib/", "var/lib/apt/", "var/lib/apt/lists/", "var/lib/apt/lists/lock", "var/lib/apt/lists/partial/",
		"var/lib/dpkg/", "var/lib/dpkg/status",
		"var/log/", "var/log/apt/", "var/log/apt/history.log", "var/log/wtmp",
	}
	if got := listTree(t, root); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("after minimize:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	for _, log := range []string{"var/log/apt/history.log", "var/log/wtmp"} {
		fi, err := os.Stat(filepath.Join(root, log))
		if err != nil || fi.Size() != 0 {
			t.Errorf("%s: %v, size %d; want it kept, empty", log, err, fi.Size())
		}
	}
	if fi, _ := os.Stat(filepath.Join(root, "var/log/wtmp")); fi.Mode().Perm() != 0o664 {
		t.Errorf("wtmp mode %v, want its mode kept", fi.Mode())
	}
	if fi, err := os.Lstat(filepath.Join(root, "etc/resolv.conf")); err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 {
		t.Errorf("etc/resolv.conf: %v %v; want an empty regular file", fi, err)
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "nameserver 10.0.0.1\n" {
		t.Errorf("the host's resolv.conf changed: %q %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/dpkg/dpkg.cfg.d/gondolin-minimal")); string(b) != DpkgExcludes {
		t.Errorf("dpkg excludes = %q", b)
	}
}

func TestMinimizeToleratesMissingDirectories(t *testing.T) {
	root := t.TempDir()
	if err := minimize(root); err != nil {
		t.Fatalf("minimize of an empty tree: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/hostname")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("etc/hostname: %v", err)
	}
}

func TestInstalledVersions(t *testing.T) {
	root := t.TempDir()
	writeTestFile(t, filepath.Join(root, "var/lib/dpkg/status"), fakeStatus, 0o644)
	got, err := installedVersions(root, []string{"curl", "base-files"})
	if err != nil || got["curl"] != "7.88.1-10+deb12u99" || got["base-files"] != "12.4+deb12u99" || len(got) != 2 {
		t.Fatalf("installedVersions = %v, %v", got, err)
	}
	if _, err := installedVersions(root, []string{"removed-thing"}); err == nil {
		t.Error("a package with only its config files left counted as installed")
	}
}
