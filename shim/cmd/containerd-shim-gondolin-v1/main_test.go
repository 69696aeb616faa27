package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestIsDaemon(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"-namespace", "default", "-id", "c1", "-address", "/run/containerd/containerd.sock"}, true},
		{[]string{"-namespace", "default", "-id", "c1", "-address", "/run/containerd/containerd.sock", "-debug"}, true},
		{[]string{"-namespace", "default", "-address", "/a", "-publish-binary", "/b", "-id", "c1", "start"}, false},
		{[]string{"-namespace", "default", "-address", "/a", "-publish-binary", "/b", "-id", "c1", "-bundle", "/x", "delete"}, false},
		{[]string{"-v"}, false},
		{[]string{"-info"}, false},
		{nil, false},
	} {
		if got := isDaemon(c.args); got != c.want {
			t.Errorf("isDaemon(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}

func TestServePprof(t *testing.T) {
	if _, err := servePprof("relative/dir"); err == nil {
		t.Error("a relative directory was accepted")
	}
	dir := filepath.Join(t.TempDir(), "pprof")
	stop, err := servePprof(dir)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "shim-"+strconv.Itoa(os.Getpid())+".sock")
	for path, mode := range map[string]os.FileMode{dir: 0o700, sock: 0o600} {
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v, want %v", path, err, st.Mode().Perm(), mode)
		}
	}
	c := &http.Client{Transport: &http.Transport{Dial: func(string, string) (net.Conn, error) { return net.Dial("unix", sock) }}}
	resp, err := c.Get("http://shim/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "goroutine profile") {
		t.Errorf("goroutine profile: %s: %.200s", resp.Status, b)
	}
	stop()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after stop: %v", err)
	}
}
