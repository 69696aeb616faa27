// Package manager runs the shim process's life for containerd: `start`
// spawns the shim daemon and hands back its socket, `delete` cleans up
// after a shim that is gone.
package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/runtime"
)

// RuntimeName is the runtime's containerd name.
const RuntimeName = "io.containerd.gondolin.v1"

// Version is the shim's version, set at build time.
var Version = "dev"

// groupAnnotations put containers of one pod into one shim process, as the
// runc shim does; each container still gets its own VM for now.
var groupAnnotations = []string{
	"io.gondolin.group",
	"io.kubernetes.cri.sandbox-id",
}

type manager struct{ name string }

// New returns the shim manager.
func New(name string) shim.Manager { return manager{name: name} }

func (m manager) Name() string { return m.name }

// Start spawns the long-lived shim process (or finds the one its group
// already has) and returns its ttrpc address.
func (m manager) Start(ctx context.Context, id string, opts shim.StartOpts) (_ shim.BootstrapParams, retErr error) {
	params := shim.BootstrapParams{Version: 3, Protocol: "ttrpc"}
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return params, err
	}
	grouping := id
	if ann, err := readAnnotations("config.json"); err == nil {
		for _, key := range groupAnnotations {
			if g, ok := ann[key]; ok && g != "" {
				grouping = g
				break
			}
		}
	}
	address, err := shim.SocketAddress(ctx, opts.Address, grouping, false)
	if err != nil {
		return params, err
	}
	socket, err := shim.NewSocket(address)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return params, fmt.Errorf("create shim socket: %w", err)
		}
		if shim.CanConnect(address) {
			params.Address = address
			return params, nil
		}
		if err := shim.RemoveSocket(address); err != nil {
			return params, fmt.Errorf("remove stale shim socket: %w", err)
		}
		if socket, err = shim.NewSocket(address); err != nil {
			return params, fmt.Errorf("create shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			socket.Close()
			_ = shim.RemoveSocket(address)
		}
	}()
	f, err := socket.File()
	if err != nil {
		return params, err
	}
	defer f.Close()

	self, err := os.Executable()
	if err != nil {
		return params, err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return params, err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", opts.Address}
	if opts.Debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), "GOMAXPROCS=4")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		return params, fmt.Errorf("start shim: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = cmd.Process.Kill()
		}
	}()
	go func() { _ = cmd.Wait() }()
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		return params, fmt.Errorf("adjust shim OOM score: %w", err)
	}
	params.Address = address
	return params, nil
}

func readAnnotations(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	return s.Annotations, nil
}

// Stop is `shim delete`: containerd runs it (in the bundle directory) when
// the shim is gone, to remove whatever the container left behind.
func (m manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return shim.StopStatus{}, err
	}
	if err := runtime.Cleanup(ctx, runtime.DefaultStateRoot, ns, id); err != nil {
		log.G(ctx).WithError(err).Warn("cleanup after shim")
	}
	// The bundle's rootfs may still be mounted if the state was never
	// written (the shim died during create).
	if cwd, err := os.Getwd(); err == nil {
		rootfs := filepath.Join(cwd, "rootfs")
		for i := 0; i < 16; i++ {
			if err := unix.Unmount(rootfs, unix.MNT_DETACH); err != nil {
				break
			}
		}
	}
	return shim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(unix.SIGKILL)}, nil
}

// Info describes the runtime to containerd.
func (m manager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	return &types.RuntimeInfo{
		Name:    m.name,
		Version: &types.RuntimeVersion{Version: Version},
	}, nil
}
