package initproc

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The helpers run in a re-executed test binary: they change the mount
// namespace and root of their thread, which the test process must keep.
const (
	helperEnv  = "GONDOLIN_INITPROC_HELPER"
	helperRoot = "GONDOLIN_INITPROC_ROOT"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "enter":
		helperEnter(os.Getenv(helperRoot))
	case "join":
		helperJoin()
	}
	os.Exit(3)
}

// helperEnter: a container root (a tmpfs with a marker) is entered as an
// init enters it; then the classic chroot escape is tried, and what "/" is
// afterwards printed. It then waits for stdin to close, holding the
// namespace for helperJoin.
func helperEnter(dir string) {
	runtime.LockOSThread()
	fail := func(err error) {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if err := unshareMountNS(); err != nil {
		fail(err)
	}
	root := filepath.Join(dir, "root")
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=1m"); err != nil {
		fail(err)
	}
	if err := os.WriteFile(filepath.Join(root, "marker"), nil, 0o644); err != nil {
		fail(err)
	}
	if err := enterRoot(root); err != nil {
		fail(err)
	}
	// mkdir x; chroot x; cd .. (many times); chroot .
	if err := unix.Mkdir("/x", 0o755); err != nil {
		fail(err)
	}
	if err := unix.Chroot("/x"); err != nil {
		fail(err)
	}
	for range 64 {
		if err := unix.Chdir(".."); err != nil {
			fail(err)
		}
	}
	if err := unix.Chroot("."); err != nil {
		fail(err)
	}
	fmt.Println("root:", listRoot())
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	os.Exit(0)
}

// helperJoin joins the mount namespace at MountNSFd as an exec process
// does and prints what its "/" is.
func helperJoin() {
	runtime.LockOSThread()
	if err := joinMountNS(MountNSFd); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("root:", listRoot())
	os.Exit(0)
}

func listRoot() string {
	ents, err := os.ReadDir("/")
	if err != nil {
		return "error: " + err.Error()
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}

// A process with CAP_SYS_CHROOT that escapes a chroot the classic way
// stays in the container root it pivoted into; an exec process joining
// its mount namespace sees that same root.
func TestEnterRootChrootEscape(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (mount namespaces)")
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "root"), 0o755); err != nil {
		t.Fatal(err)
	}
	enter := exec.Command(os.Args[0], "-test.run=^$")
	enter.Env = append(os.Environ(), helperEnv+"=enter", helperRoot+"="+dir)
	stdin, err := enter.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := enter.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	enter.Stderr = os.Stderr
	if err := enter.Start(); err != nil {
		t.Fatal(err)
	}
	defer enter.Wait()
	defer stdin.Close()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("helper: %q, %v", line, err)
	}
	// The tmpfs holds the marker and the escape's directory, and nothing
	// of the test machine's root (no tmp, proc, usr, ...).
	if got, want := strings.TrimSpace(line), "root: marker,x"; got != want {
		t.Fatalf("after the chroot escape, %q; want %q", got, want)
	}

	mntns, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", enter.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mntns.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	join := exec.Command(os.Args[0], "-test.run=^$")
	join.Env = append(os.Environ(), helperEnv+"=join")
	join.ExtraFiles = []*os.File{devnull, devnull, mntns} // fds 3, 4, MountNSFd
	b, err := join.CombinedOutput()
	if err != nil {
		t.Fatalf("join helper: %s, %v", b, err)
	}
	if got, want := strings.TrimSpace(string(b)), "root: marker,x"; got != want {
		t.Fatalf("joined the init's mount namespace: %q; want %q", got, want)
	}
}

// An exec process that was not given the init's mount namespace refuses
// to go on: it would run with the agent's root.
func TestExecWithoutMountNSRefused(t *testing.T) {
	_, err := prepare(&Config{Args: []string{"true"}, Exec: true})
	if err == nil || !strings.Contains(err.Error(), "mount namespace") {
		t.Fatalf("prepare of an exec without JoinMountNS: %v", err)
	}
}
