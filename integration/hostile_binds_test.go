//go:build integration

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/earendil-works/gondolin-containerd/internal/mounttest"
)

// Attacks on the shares (issue 14, findings 1, 3 and 4): from a privileged
// root container that mounts the virtio-fs tags again, the host's mounts,
// a read-only bind's submounts, a read-only root and the host's disk under
// the bundle must stay as they were.

// cVirtiofsdConfig is a runtime config that serves the shares with QEMU's
// C virtiofsd. It announces no submounts, so a guest that mounts the binds
// tag again gets the share's root: the attacker's best position. (The Rust
// virtiofsd announces each bind as a submount, and the guest kernel then
// hands the new mount the last bind's superblock instead of the root.)
func cVirtiofsdConfig(t *testing.T) string {
	t.Helper()
	const c = "/usr/lib/qemu/virtiofsd"
	if _, err := os.Stat(c); err != nil {
		t.Skipf("QEMU's C virtiofsd is not installed: %v", err)
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf("virtiofsd_path = %q\n", c)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// bundleDir is the container's bundle in the private containerd's state.
func bundleDir(id string) string {
	return filepath.Join(os.Getenv("GONDOLIN_CONTAINERD_STATE"), "io.containerd.runtime.v2.task", namespace(), id)
}

// The binds share's root takes no entry from the guest (no symlink to plant
// for the shim's cleanup to follow, no file to fill the host's /run), and
// deleting the container leaves a host mount that a symlink there would
// have named in place, and nothing of the container.
func TestHostileBindsShareRoot(t *testing.T) {
	tmp := t.TempDir()
	victim := filepath.Join(tmp, "victim")
	mounttest.Tmpfs(t, victim)
	if err := os.WriteFile(filepath.Join(victim, "keep"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(tmp, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`mkdir -p /mnt/b && mount -t virtiofs binds /mnt/b || { echo NOMOUNT; exit 0; }
[ -d /mnt/b/0 ] || { echo NOTROOT; ls -la /mnt/b; exit 0; }
ln -s %[1]s /mnt/b/evil 2>/dev/null && echo PLANTED-symlink
ln -s /proc /mnt/b/evil2 2>/dev/null && echo PLANTED-proc
mkdir /mnt/b/junk 2>/dev/null && echo PLANTED-dir
echo x > /mnt/b/file 2>/dev/null && echo PLANTED-file
mv /mnt/b/0 /mnt/b/moved 2>/dev/null && echo PLANTED-rename
echo rw > /mnt/b/0/through-share && echo WROTE-rw
echo done`, victim)
	flags := []string{"--runtime-config-path", cVirtiofsdConfig(t), "--privileged", "--mount", "type=bind,src=" + src + ",dst=/data,options=rbind:rw"}
	res := run(t, nil, flags, "sh", "-c", script)
	if res.code != 0 || !strings.Contains(res.stdout, "done") || strings.Contains(res.stdout, "NOMOUNT") || strings.Contains(res.stdout, "NOTROOT") {
		t.Fatalf("attack script (it needs the binds share's root, mounted again in the guest): %s", res)
	}
	if strings.Contains(res.stdout, "PLANTED") {
		t.Errorf("the guest created entries in the binds share's root:\n%s", res.stdout)
	}
	if !strings.Contains(res.stdout, "WROTE-rw") {
		t.Errorf("a :rw bind was not writable through the share: %s", res)
	}
	if b, _ := os.ReadFile(filepath.Join(src, "through-share")); string(b) != "rw\n" {
		t.Errorf("the :rw write did not reach its source: %q", b)
	}
	if !mounttest.Mounted(t, victim) {
		t.Fatal("deleting the container unmounted a host tmpfs")
	}
	if b, _ := os.ReadFile(filepath.Join(victim, "keep")); string(b) != "host" {
		t.Errorf("host file changed: %q", b)
	}
}

// A :ro bind is read-only in every mount below its source, also to a guest
// that mounts the binds tag again read-write, and also for the container's
// own bind remounted read-write.
func TestHostileReadonlyBindSubmount(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	sub := filepath.Join(src, "sub")
	mounttest.Tmpfs(t, sub)
	// The tag mounted again is the share's root (C virtiofsd) or the
	// bind itself (Rust virtiofsd, see cVirtiofsdConfig): both are tried.
	// The binds share is a tag of its own, or, in a VM from the VM pool,
	// the container's binds in the pod share.
	script := `mkdir -p /mnt/b
if mount -t virtiofs binds /mnt/b 2>/dev/null; then b=/mnt/b
elif mount -t virtiofs pod /mnt/b 2>/dev/null; then
	# The guest kernel may give the mount the root of one of the share's
	# submounts (the binds' own) rather than the share's.
	b=/mnt/b; for c in /mnt/b/*/binds; do [ -d $c ] && b=$c; done
else echo NOMOUNT; exit 0; fi
mount -o remount,rw /mnt/b 2>/dev/null
[ -d $b/0 ] && b=$b/0
[ -d $b/sub ] || { echo NOSUB; ls -la /mnt/b; }
echo pwned > $b/sub/pwned-share 2>/dev/null && echo WROTE-share-sub
echo pwned > $b/pwned-share 2>/dev/null && echo WROTE-share-top
mount -o remount,rw /data 2>/dev/null
echo pwned > /data/sub/pwned-data 2>/dev/null && echo WROTE-data-sub
echo pwned > /data/pwned-data 2>/dev/null && echo WROTE-data-top
echo done`
	for _, tc := range []struct{ name, config string }{{"rust", ""}, {"c", cVirtiofsdConfig(t)}} {
		t.Run(tc.name, func(t *testing.T) {
			flags := []string{"--privileged", "--mount", "type=bind,src=" + src + ",dst=/data,options=rbind:ro"}
			if tc.config != "" {
				flags = append([]string{"--runtime-config-path", tc.config}, flags...)
			}
			res := run(t, nil, flags, "sh", "-c", script)
			if res.code != 0 || !strings.Contains(res.stdout, "done") || strings.Contains(res.stdout, "NOMOUNT") || strings.Contains(res.stdout, "NOSUB") {
				t.Fatalf("attack script: %s", res)
			}
			if strings.Contains(res.stdout, "WROTE") {
				t.Errorf("the guest wrote through a :ro bind:\n%s", res.stdout)
			}
			for _, p := range []string{"sub/pwned-share", "pwned-share", "sub/pwned-data", "pwned-data"} {
				if _, err := os.Lstat(filepath.Join(src, p)); err == nil {
					t.Errorf("%s appeared on the host", p)
				}
			}
		})
	}
	if !mounttest.Mounted(t, sub) {
		t.Error("the host tmpfs below the source is gone")
	}
}

// A read-only root stays read-only on the host: a guest that remounts its
// root read-write, or mounts the rootfs tag again, writes nothing there.
func TestHostileReadonlyRoot(t *testing.T) {
	id := startDetached(t, []string{"--privileged", "--read-only"}, "sleep", "600")
	rootfs := filepath.Join(bundleDir(id), "rootfs")
	if _, err := os.Stat(filepath.Join(rootfs, "bin")); err != nil {
		t.Fatalf("cannot see the container's rootfs on the host at %s: %v", rootfs, err)
	}
	script := `echo pwned > /pwned-before 2>/dev/null && echo WROTE-ro-root
mount -o remount,rw / 2>/dev/null
echo pwned > /pwned-remount 2>/dev/null && echo WROTE-remount
d=/dev/gondolin-rootfs; mkdir -p $d
if mount -t virtiofs rootfs $d 2>/dev/null; then r=$d
elif mount -t virtiofs pod $d 2>/dev/null; then
	# The guest kernel may give the mount the root of one of the share's
	# submounts (the root's own) rather than the share's.
	r=$d; for c in $d/*/rootfs; do [ -d $c/bin ] && r=$c; done
else echo NOMOUNT; r=$d; fi
[ -d $r/bin ] || echo NOROOT
echo pwned > $r/pwned-tag 2>/dev/null && echo WROTE-tag
echo pwned > $r/etc/passwd 2>/dev/null && echo WROTE-passwd
echo done`
	res := ctr(t, nil, "task", "exec", "--exec-id", "attack", id, "sh", "-c", script)
	if res.code != 0 || !strings.Contains(res.stdout, "done") || strings.Contains(res.stdout, "NOMOUNT") || strings.Contains(res.stdout, "NOROOT") {
		t.Fatalf("attack script (it needs the rootfs tag, or the pod share, mounted again): %s", res)
	}
	if strings.Contains(res.stdout, "WROTE") {
		t.Errorf("the guest wrote to its read-only root:\n%s", res.stdout)
	}
	for _, p := range []string{"pwned-before", "pwned-remount", "pwned-tag"} {
		if _, err := os.Lstat(filepath.Join(rootfs, p)); err == nil {
			t.Errorf("%s appeared in the host rootfs", p)
		}
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "etc", "passwd")); err != nil || strings.Contains(string(b), "pwned") {
		t.Errorf("host /etc/passwd of the container: %q, %v", b, err)
	}
}

// A guest printing on its console without end keeps the bundle's
// console.log under limits.console_log_bytes.
func TestHostileConsoleFlood(t *testing.T) {
	const limit = 64 << 10
	dir := t.TempDir()
	// On the suite's snapshot pass the VM resumes from a snapshot, with
	// that pass's config under the limit.
	var base []byte
	if p := os.Getenv(bootPathConfigEnv); p != "" {
		var err error
		if base, err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("%s\n[limits]\nconsole_log_bytes = %d\n", base, limit)), 0o644); err != nil {
		t.Fatal(err)
	}
	id := startDetached(t, []string{"--runtime-config-path", cfg, "--privileged"}, "sh", "-c",
		// The guest's serial port itself (ttyS0, 4:64): a privileged
		// container can make its node on its own /dev.
		`mknod /dev/flood c 4 64 || exit 1; line=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef; while :; do echo "$line$line$line$line"; done > /dev/flood`)
	console := filepath.Join(bundleDir(id), "console.log")
	var size int64
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		fi, err := os.Stat(console)
		if err != nil {
			t.Fatalf("console log: %v", err)
		}
		size = fi.Size()
		if size > limit {
			t.Fatalf("console.log is %d bytes, over the %d-byte limit", size, limit)
		}
		b, _ := os.ReadFile(console)
		if strings.Contains(string(b), "console_log_bytes") {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	b, err := os.ReadFile(console)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "the rest of the guest's console output was discarded") {
		t.Fatalf("the flood did not reach the limit in 20 s (console.log is %d bytes):\n%s", len(b), b[max(0, len(b)-500):])
	}
	// Still flooding: the log does not grow.
	time.Sleep(2 * time.Second)
	if fi, err := os.Stat(console); err != nil || fi.Size() > limit || fi.Size() != int64(len(b)) {
		t.Errorf("console.log after the cap: %v, %v (was %d)", fi.Size(), err, len(b))
	}
	if res := ctr(t, nil, "task", "exec", "--exec-id", "alive", id, "echo", "alive"); !strings.Contains(res.stdout, "alive") {
		t.Errorf("the container stopped answering under its own console flood: %s", res)
	}
}
