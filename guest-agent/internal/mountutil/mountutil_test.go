package mountutil

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseOptions(t *testing.T) {
	cases := []struct {
		name string
		in   []string
		want Options
	}{
		{"empty", nil, Options{}},
		{"proc", []string{"nosuid", "noexec", "nodev"}, Options{Flags: unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV}},
		{"devpts", []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"},
			Options{Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "newinstance,ptmxmode=0666,mode=0620,gid=5"}},
		{"shm", []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"},
			Options{Flags: unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV, Data: "mode=1777,size=65536k"}},
		{"ro", []string{"ro", "nosuid"}, Options{Flags: unix.MS_RDONLY | unix.MS_NOSUID}},
		{"ro then rw", []string{"ro", "rw"}, Options{}},
		{"rbind rprivate", []string{"rbind", "rprivate", "ro"}, Options{Flags: unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY, Propagation: unix.MS_PRIVATE | unix.MS_REC}},
		{"ignored", []string{"defaults", " relatime ", ""}, Options{Flags: unix.MS_RELATIME}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := ParseOptions(c.in); got != c.want {
				t.Errorf("ParseOptions(%q) = %+v, want %+v", c.in, got, c.want)
			}
		})
	}
}

func TestNormalizeType(t *testing.T) {
	for in, want := range map[string]string{"cgroup": "cgroup2", "cgroup2": "cgroup2", "proc": "proc", "tmpfs": "tmpfs"} {
		if got := NormalizeType(in); got != want {
			t.Errorf("NormalizeType(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSecureJoin(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "usr/lib"), 0o755))
	must(os.Symlink("/usr/lib", filepath.Join(root, "lib")))           // absolute, inside
	must(os.Symlink("../../../../etc", filepath.Join(root, "escape"))) // relative, tries to leave
	must(os.Symlink("/", filepath.Join(root, "slash")))
	must(os.Symlink("loop2", filepath.Join(root, "loop1")))
	must(os.Symlink("loop1", filepath.Join(root, "loop2")))

	cases := map[string]string{
		"/proc":             "/proc",
		"proc":              "/proc",
		"/lib/modules":      "/usr/lib/modules",
		"/escape/passwd":    "/etc/passwd",
		"/../../etc":        "/etc",
		"/slash/slash/dev":  "/dev",
		"/usr/./lib/../bin": "/usr/bin",
		"/":                 "/",
		// Below a missing component nothing is looked up; back above
		// it, symlinks resolve again.
		"/missing/lib/modules":      "/missing/lib/modules",
		"/missing/a/../../lib/x":    "/usr/lib/x",
		"/missing/../escape/passwd": "/etc/passwd",
	}
	for in, want := range cases {
		got, err := SecureJoin(root, in)
		if err != nil {
			t.Errorf("SecureJoin(%q): %v", in, err)
			continue
		}
		if want := filepath.Join(root, want); got != want {
			t.Errorf("SecureJoin(%q) = %q, want %q", in, got, want)
		}
	}
	if _, err := SecureJoin(root, "/loop1/x"); err == nil {
		t.Error("symlink loop: no error")
	}
}
