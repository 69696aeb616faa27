//go:build integration

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// escapeProgram is the classic chroot escape, run as root in the container
// with the default capabilities (CAP_SYS_CHROOT among them): chroot into a
// subdirectory, so the cwd is left outside the root, walk ".." as far as
// it goes, chroot there. It prints what "/" held before and after, which
// of the guest's own paths it can see afterwards, and "/"'s device and
// inode. With "id" it only prints the last.
const escapeProgram = `package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
)

func list() string {
	ents, err := os.ReadDir("/")
	if err != nil {
		return "error: " + err.Error()
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

func rootID() string {
	var st syscall.Stat_t
	if err := syscall.Stat("/", &st); err != nil {
		return "error: " + err.Error()
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "id" {
		fmt.Println("root-id:", rootID())
		return
	}
	if err := os.WriteFile("/.escape-marker", nil, 0o644); err != nil {
		fmt.Println("marker:", err)
		os.Exit(2)
	}
	_ = os.Mkdir("/.escape-x", 0o755)
	before := list()
	if err := syscall.Chroot("/.escape-x"); err != nil {
		fmt.Println("chroot:", err)
		os.Exit(2)
	}
	for i := 0; i < 256; i++ {
		_ = syscall.Chdir("..")
	}
	if err := syscall.Chroot("."); err != nil {
		fmt.Println("chroot .:", err)
		os.Exit(2)
	}
	fmt.Println("chroot-ok")
	fmt.Println("before:", before)
	fmt.Println("after:", list())
	// The container has a /run/gondolin of its own (the CA bundle's
	// fallback place); the agent's holds these.
	for _, p := range []string{"/init", "/run/gondolin/containers", "/run/gondolin/shares", "/run/gondolin/files", "/.escape-marker"} {
		if _, err := os.Lstat(p); err == nil {
			fmt.Println("found:", p)
		}
	}
	// The container's PID 1 is its own init, whose root is the
	// container's; its mount table holds none of the agent's mounts.
	if ents, err := os.ReadDir("/proc/1/root"); err == nil {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		fmt.Println("proc1root:", strings.Join(names, ","))
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 4 && (strings.HasPrefix(f[4], "/run/gondolin/containers") || strings.HasPrefix(f[4], "/run/gondolin/shares")) {
				fmt.Println("found: mount", f[4])
			}
		}
	}
	fmt.Println("root-id:", rootID())
}
`

// buildEscape compiles escapeProgram (static, no cgo) into a directory of
// its own, to be bound read-only into a container.
func buildEscape(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(escapeProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(out, "escape"), "main.go")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GO111MODULE=on")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the escape program: %v\n%s", err, b)
	}
	return out
}

// checkEscape asserts that an escape attempt ran (the chroot worked: the
// capability is there) and ended in the container's own root: "/" is the
// same before and after, the container's marker is there, and nothing of
// the guest's root (the agent as /init, its containers, shares and files
// under /run/gondolin) is.
func checkEscape(t *testing.T, who, out string) (rootID string) {
	t.Helper()
	lines := map[string]string{}
	var found []string
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			lines[l] = ""
			continue
		}
		if k == "found" {
			found = append(found, v)
			continue
		}
		lines[k] = v
	}
	if _, ok := lines["chroot-ok"]; !ok {
		t.Fatalf("%s: the escape did not run (no CAP_SYS_CHROOT?):\n%s", who, out)
	}
	if lines["before"] == "" || lines["before"] != lines["after"] || lines["before"] != lines["proc1root"] {
		t.Errorf("%s: \"/\" changed with the chroot escape, or /proc/1/root is another:\nbefore:     %s\nafter:      %s\n/proc/1/root: %s", who, lines["before"], lines["after"], lines["proc1root"])
	}
	if strings.Join(found, " ") != "/.escape-marker" {
		t.Errorf("%s: after the chroot escape, the process sees %q; want only the container's own /.escape-marker", who, found)
	}
	return lines["root-id"]
}

// Finding 6 of issue 14: a root container with the default capabilities
// leaves its chroot inside the guest and reaches the guest's root, the
// agent and the shares. The container init pivot_roots into its root in a
// mount namespace of its own, and execs join that namespace: the escape,
// tried by the init's child and by an exec, stays in the container root,
// and an exec's root is the init's.
func TestHostileChrootEscape(t *testing.T) {
	bin := buildEscape(t)
	id := startDetached(t, []string{"--mount", "type=bind,src=" + bin + ",dst=/t,options=rbind:ro"},
		"sh", "-c", "/t/escape > /report-init 2>&1; /t/escape id > /root-id-init; exec sleep 1000")
	waitStatus(t, id, "RUNNING", "after run -d")

	// Wait for the init's report (it is written before the sleep).
	var init result
	for i := 0; i < 50; i++ {
		init = ctr(t, nil, "task", "exec", "--exec-id", "report", id, "sh", "-c", "test -s /root-id-init && cat /report-init")
		if init.code == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if init.code != 0 {
		t.Fatalf("the init's escape report: %s", init)
	}
	initRoot := checkEscape(t, "the container init's child", init.stdout)

	res := ctr(t, nil, "task", "exec", "--exec-id", "escape", id, "/t/escape")
	if res.code != 0 {
		t.Fatalf("exec of the escape: %s", res)
	}
	execRoot := checkEscape(t, "an exec process", res.stdout)

	res = ctr(t, nil, "task", "exec", "--exec-id", "id", id, "/t/escape", "id")
	execID := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(res.stdout), "root-id:"))
	initID := ctr(t, nil, "task", "exec", "--exec-id", "initid", id, "cat", "/root-id-init")
	wantID := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(initID.stdout), "root-id:"))
	if res.code != 0 || execID == "" || strings.HasPrefix(execID, "error") || execID != wantID {
		t.Errorf("an exec's root (%q) is not the init's (%q): %s", execID, wantID, res)
	}
	if initRoot != wantID || execRoot != wantID {
		t.Errorf("after the escape the root is %q (init's child) and %q (exec); the container root is %q", initRoot, execRoot, wantID)
	}
}
