// Command gondolin-agent is the init (PID 1) of a gondolin guest VM and,
// re-executed as "gondolin-agent init", the init of each container.
package main

import (
	"fmt"
	"os"

	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agent"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/initproc"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/service"
)

func main() {
	// A container init is PID 1 of its own PID namespace: check for it first.
	if len(os.Args) > 1 && os.Args[1] == initproc.Arg && os.Getenv(initproc.EnvMarker) != "" {
		initproc.Main()
		return
	}
	if os.Getpid() == 1 {
		agent.Main()
		return
	}
	if len(os.Args) > 1 && (os.Args[1] == "version" || os.Args[1] == "--version") {
		fmt.Println("gondolin-agent", service.Version)
		return
	}
	fmt.Fprintln(os.Stderr, "gondolin-agent is the init (PID 1) of a gondolin guest VM; it is not meant to be run by hand")
	os.Exit(2)
}
