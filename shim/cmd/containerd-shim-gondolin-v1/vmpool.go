package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/containerd/log"

	"github.com/earendil-works/gondolin-containerd/config"
	"github.com/earendil-works/gondolin-containerd/runtime"
	"github.com/earendil-works/gondolin-containerd/vmm/vmpool"
)

// runVMPool is the shim binary run as a VM pool (`vm-pool`), which a shim
// starts when a create finds none running (runtime/vmpool.go); containerd
// never runs it. It returns the exit code.
func runVMPool(args []string) int {
	fl := flag.NewFlagSet(runtime.VMPoolCommand, flag.ContinueOnError)
	configPath := fl.String("config", "", "runtime config (default: "+config.DefaultPath+" if it exists)")
	socket := fl.String("socket", "", "the pool's socket, as the shim that starts it computed it")
	stateRoot := fl.String("state-root", runtime.DefaultStateRoot, "the runtime's state root")
	shape := fl.String("shape", "", "a VM shape (JSON) to start VMs of at once")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "vm-pool: --socket is required")
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vm-pool: %v\n", err)
		return 1
	}
	cfg, err := config.Load(*configPath, filepath.Dir(exe))
	if err != nil {
		fmt.Fprintf(os.Stderr, "vm-pool: %v\n", err)
		return 1
	}
	if err := log.SetLevel(cfg.LogLevel); err != nil {
		fmt.Fprintf(os.Stderr, "vm-pool: %v\n", err)
		return 1
	}
	var prime []vmpool.Shape
	if *shape != "" {
		sh, err := vmpool.ParseShape(*shape)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vm-pool: --shape: %v\n", err)
			return 2
		}
		prime = append(prime, sh)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := runtime.ServeVMPool(ctx, cfg, *stateRoot, *socket, prime...); err != nil {
		log.G(ctx).WithError(err).Error("vm-pool")
		return 1
	}
	return 0
}
