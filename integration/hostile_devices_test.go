//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// devicesProgram is run as root with the default capabilities (CAP_MKNOD
// among them). Each check prints "NAME: ok" or "NAME: fail <error>".
// It makes nodes for devices the container was not given (the guest's
// /dev/kmsg, console and hardware RNG) on its /dev tmpfs, a tmpfs volume,
// its root (the virtio-fs share) and a bind mount, and tries them; then a
// node for an allowed device (null), and the devices it was given.
const devicesProgram = `
try() { n=$1; shift; if timeout 5 "$@" >/dev/null 2>/tmp/.err; then echo "$n: ok"; else echo "$n: fail $(cat /tmp/.err)"; fi; }
mkdir -p /tmp
try mknod-kmsg mknod /dev/x c 1 11
try read-kmsg head -c 1 /dev/x
try write-kmsg sh -c 'echo GONDOLIN-FAKE-KMSG > /dev/x'
try mknod-console mknod /dev/c c 5 1
try write-console sh -c 'echo GONDOLIN-FAKE-CONSOLE > /dev/c'
try mknod-hwrng mknod /dev/h c 10 183
try read-hwrng head -c 1 /dev/h
try mknod-root mknod /tmp/y c 1 11
try read-root head -c 1 /tmp/y
try mknod-bind mknod /b/w c 1 11
try read-bind head -c 1 /b/w
try mknod-volume mknod /vol/v c 1 11
try read-volume head -c 1 /vol/v
try mknod-null mknod /dev/z c 1 3
try write-mknod-null sh -c 'echo x > /dev/z'
try null sh -c 'echo x > /dev/null'
try zero sh -c 'test "$(head -c 4 /dev/zero | wc -c)" = 4'
try urandom sh -c 'test "$(head -c 4 /dev/urandom | wc -c)" = 4'
try tty test -c /dev/tty
try ptmx test -c /dev/ptmx
try pts test -c /dev/pts/ptmx
`

// Follow-up to finding 6 of issue 14: the guest has no device cgroup, so
// a root container could mknod a node for any guest device and open it
// (read the kernel log and the hardware RNG, write lines into the host's
// console.log). Every mount the agent gives a container is nodev, and its
// devices are bound in one by one: the nodes it makes do not open, on any
// mount, and the devices it was given work. The host's console.log holds
// none of the lines it tried to write.
func TestHostileDevices(t *testing.T) {
	bind := t.TempDir()
	id := startDetached(t, []string{
		"--mount", "type=bind,src=" + bind + ",dst=/b,options=rbind:rw",
		"--mount", "type=tmpfs,src=tmpfs,dst=/vol,options=mode=1777",
	}, "sleep", "1000")
	waitStatus(t, id, "RUNNING", "after run -d")
	res := ctr(t, nil, "task", "exec", "--exec-id", "devices", id, "sh", "-c", devicesProgram)
	if res.code != 0 {
		t.Fatalf("the device checks did not run: %s", res)
	}
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(res.stdout), "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok {
			got[k] = v
		}
	}
	t.Logf("container:\n%s", res.stdout)
	for _, k := range []string{"mknod-kmsg", "mknod-console", "mknod-hwrng", "mknod-volume", "mknod-null"} {
		if got[k] != "ok" {
			t.Errorf("%s: %q: the attack did not run (no CAP_MKNOD?)", k, got[k])
		}
	}
	// runc lets a container open a node it made for an allowed device
	// (docs/limits.md); here no node the container makes opens.
	for _, k := range []string{"read-kmsg", "write-kmsg", "write-console", "read-hwrng", "read-volume", "write-mknod-null"} {
		if !strings.HasPrefix(got[k], "fail") || !strings.Contains(got[k], "Permission denied") {
			t.Errorf("%s: %q; want Permission denied", k, got[k])
		}
	}
	// On virtio-fs, virtiofsd refuses the mknod itself (the host would
	// otherwise hold the node); were it made, the mount is nodev.
	for _, k := range []string{"root", "bind"} {
		if got["mknod-"+k] == "ok" && !strings.Contains(got["read-"+k], "Permission denied") {
			t.Errorf("read-%s: %q; want Permission denied", k, got["read-"+k])
		}
		if got["mknod-"+k] != "ok" && !strings.HasPrefix(got["read-"+k], "fail") {
			t.Errorf("read-%s: %q after the mknod failed", k, got["read-"+k])
		}
	}
	for _, k := range []string{"null", "zero", "urandom", "tty", "ptmx", "pts"} {
		if got[k] != "ok" {
			t.Errorf("the container's own /dev: %s: %q", k, got[k])
		}
	}
	b, err := os.ReadFile(filepath.Join(bundleDir(id), "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "GONDOLIN-FAKE") {
		t.Errorf("the container wrote into the host's console.log:\n%s", b)
	}

	// --privileged allows every device (as runc does): its nodes open.
	res = run(t, nil, []string{"--privileged"}, "sh", "-c", "mknod /dev/z c 1 3 && echo x > /dev/z && echo privileged-ok")
	if res.code != 0 || !strings.Contains(res.stdout, "privileged-ok") {
		t.Errorf("a privileged container's node for /dev/null: %s", res)
	}
}
