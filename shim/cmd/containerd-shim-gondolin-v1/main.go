// Command containerd-shim-gondolin-v1 is the containerd shim v2 binary of
// the io.containerd.gondolin.v1 runtime.
//
// Profiling (a debug switch, off by default): with GONDOLIN_SHIM_PPROF_DIR
// set in containerd's environment (which containerd hands to the shims it
// starts), each long-lived shim serves Go's pprof handlers on the unix
// socket <dir>/shim-<pid>.sock (the directory is made 0700 and the socket
// is 0600: root only, nothing on the network), e.g.
//
//	curl -s --unix-socket $DIR/shim-$PID.sock -o cpu.pprof 'http://shim/debug/pprof/profile?seconds=20'
//	go tool pprof -top cpu.pprof
//
// The socket is removed when the shim exits normally. A socket that cannot
// be made is reported on stderr and the shim runs without it.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/pkg/shim"

	"github.com/earendil-works/gondolin-containerd/runtime"
	"github.com/earendil-works/gondolin-containerd/shim/manager"
	_ "github.com/earendil-works/gondolin-containerd/shim/task"
)

// pprofDirEnv names the directory of the shims' pprof sockets.
const pprofDirEnv = "GONDOLIN_SHIM_PPROF_DIR"

func main() {
	if len(os.Args) > 1 && os.Args[1] == runtime.VMPoolCommand {
		os.Exit(runVMPool(os.Args[2:]))
	}
	if dir := os.Getenv(pprofDirEnv); dir != "" && isDaemon(os.Args[1:]) {
		stop, err := servePprof(dir)
		if err != nil {
			fmt.Fprintf(os.Stderr, "containerd-shim-gondolin-v1: %s=%s: %v (running without pprof)\n", pprofDirEnv, dir, err)
		} else {
			defer stop()
		}
	}
	// The shim waits for its VMM and file servers with os/exec, so the
	// generic reaper must not steal their exit statuses.
	shim.Run(context.Background(), manager.New(manager.RuntimeName), func(c *shim.Config) {
		c.NoReaper = true
		c.NoSubreaper = true
	})
}

// isDaemon tells the long-lived shim from the short `start` and `delete`
// invocations (and `-v`, `-info`), which containerd runs with the action
// as the last argument; only the daemon is worth profiling.
func isDaemon(args []string) bool {
	if len(args) == 0 {
		return false
	}
	switch args[len(args)-1] {
	case "start", "delete", "-v", "--v", "-info", "--info":
		return false
	}
	return true
}

// servePprof serves net/http/pprof on dir/shim-<pid>.sock and returns
// what stops it and removes the socket.
func servePprof(dir string) (func(), error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("want an absolute directory path")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, fmt.Sprintf("shim-%d.sock", os.Getpid()))
	_ = os.Remove(path) // a previous process of the same pid
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	return func() {
		srv.Close()
		os.Remove(path)
	}, nil
}
