// Package mounttest has the mount helpers of the tests that mount file
// systems on the host: runtime's unit tests (binds, rootfs, cleanup) and the
// integration tests' hostile binds, which check that a guest's moves leave
// the host's mounts alone.
package mounttest

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Need skips a test that mounts file systems where it cannot (not root, or
// no tmpfs allowed).
func Need(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	probe := t.TempDir()
	if err := unix.Mount("probe", probe, "tmpfs", 0, "size=4k"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	_ = unix.Unmount(probe, unix.MNT_DETACH)
}

// Tmpfs mounts a small tmpfs on dir (made if missing) for the test's life.
func Tmpfs(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("gondolin-test", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
}

// Mounted says whether something is mounted exactly at path.
func Mounted(t testing.TB, path string) bool {
	t.Helper()
	return len(mountpoints(t, func(mp string) bool { return mp == path })) > 0
}

// Below lists the mounts at or below path.
func Below(t testing.TB, path string) []string {
	t.Helper()
	return mountpoints(t, func(mp string) bool { return mp == path || strings.HasPrefix(mp, path+"/") })
}

// NoneBelow fails the test if anything is mounted at or below path.
func NoneBelow(t testing.TB, path string) {
	t.Helper()
	if left := Below(t, path); len(left) > 0 {
		t.Errorf("mounts left below %s: %v", path, left)
	}
}

// mountpoints lists the mount points of this mount namespace that keep
// says to (field 5 of /proc/self/mountinfo).
func mountpoints(t testing.TB, keep func(string) bool) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && keep(f[4]) {
			out = append(out, f[4])
		}
	}
	return out
}
