package runtime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/earendil-works/gondolin-containerd/oci"
	"github.com/earendil-works/gondolin-containerd/policy"
)

func TestStateDirIsShortAndStable(t *testing.T) {
	long := strings.Repeat("a", 64)
	d := StateDir(DefaultStateRoot, "k8s.io", long)
	if d != StateDir(DefaultStateRoot, "k8s.io", long) {
		t.Fatal("state dir is not stable")
	}
	// The longest socket name in it must fit a sockaddr_un (108 bytes).
	if n := len(filepath.Join(d, "fs-rootfs.sock")); n >= 108 {
		t.Fatalf("socket path of %d bytes is too long", n)
	}
	if StateDir(DefaultStateRoot, "a", "b/c") == StateDir(DefaultStateRoot, "a/b", "c") {
		t.Fatal("different namespace/id pairs collide")
	}
}

func TestZombie(t *testing.T) {
	if !zombie([]byte("123 (qemu (x)) Z 1 2")) || zombie([]byte("123 (sleep) S 1")) {
		t.Fatal("zombie state misread")
	}
}

func TestKillIfOursSparesOthers(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if err := killIfOurs(cmd.Process.Pid, "/run/gondolin/not-in-its-cmdline"); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
		t.Fatal("killIfOurs killed a process that was not ours")
	case <-time.After(200 * time.Millisecond):
	}
}

func TestCleanupWithoutState(t *testing.T) {
	root := t.TempDir()
	dir := StateDir(root, "ns", "id")
	os.MkdirAll(dir, 0o700)
	if err := Cleanup(context.Background(), root, "ns", "id"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatal("state directory left")
	}
}

func TestHostIOFileURI(t *testing.T) {
	p := filepath.Join(t.TempDir(), "logs", "c.log")
	h, err := openHostIO(context.Background(), "c", "ns", Stdio{Stdout: "file://" + p, Stderr: "file://" + p})
	if err != nil {
		t.Fatal(err)
	}
	h.stdout.Write([]byte("out\n"))
	h.stderr.Write([]byte("err\n"))
	h.Close()
	b, _ := os.ReadFile(p)
	if string(b) != "out\nerr\n" {
		t.Fatalf("log file = %q", b)
	}
}

func TestHostIOBinaryURI(t *testing.T) {
	dir := t.TempDir()
	logger := filepath.Join(dir, "logger")
	os.WriteFile(logger, []byte("#!/bin/sh\necho \"$CONTAINER_NAMESPACE/$CONTAINER_ID $1=$2\" > "+dir+"/env\nexec 5>&-\ncat <&3 > "+dir+"/out &\ncat <&4 > "+dir+"/err &\nwait\n"), 0o755)
	h, err := openHostIO(context.Background(), "c1", "ns1", Stdio{Stdout: "binary://" + logger + "?tag=x", Stderr: "binary://" + logger + "?tag=x"})
	if err != nil {
		t.Fatal(err)
	}
	h.stdout.Write([]byte("hello"))
	h.stderr.Write([]byte("oops"))
	h.Close()
	for file, want := range map[string]string{"out": "hello", "err": "oops", "env": "ns1/c1 tag=x\n"} {
		if b, _ := os.ReadFile(filepath.Join(dir, file)); string(b) != want {
			t.Errorf("%s = %q, want %q", file, b, want)
		}
	}
}

func TestHostIOUnknownScheme(t *testing.T) {
	_, err := openHostIO(context.Background(), "c", "ns", Stdio{Stdout: "syslog://x"})
	if err == nil || !strings.Contains(err.Error(), `"syslog" is not supported`) {
		t.Fatalf("got %v", err)
	}
}

// Without a network, secrets still reach the guest only as placeholders.
func TestGuestEnvWithoutNetwork(t *testing.T) {
	var sn *sandboxNetwork
	ph := sn.placeholders(&oci.Settings{Rules: policy.Rules{Secrets: map[string][]policy.HostPattern{"TOKEN": nil}}})
	proc, err := oci.GuestProcess(&specs.Process{Args: []string{"env"}, Env: []string{"TOKEN=real-value", "PATH=/bin"}}, ph)
	if err != nil {
		t.Fatal(err)
	}
	if env := proc.Env; len(env) != 2 || env[1] != "PATH=/bin" || !strings.HasPrefix(env[0], "TOKEN="+policy.PlaceholderPrefix) {
		t.Fatalf("guest env = %q", env)
	}
}
