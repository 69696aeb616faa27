// Command containerd-shim-gondolin-v1 is the containerd shim v2 binary of
// the io.containerd.gondolin.v1 runtime.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/shim"

	"github.com/earendil-works/gondolin-containerd/shim/manager"
	_ "github.com/earendil-works/gondolin-containerd/shim/task"
)

func main() {
	// The shim waits for its VMM and file servers with os/exec, so the
	// generic reaper must not steal their exit statuses.
	shim.Run(context.Background(), manager.New(manager.RuntimeName), func(c *shim.Config) {
		c.NoReaper = true
		c.NoSubreaper = true
	})
}
