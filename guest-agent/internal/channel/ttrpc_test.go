package channel_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"github.com/hashicorp/yamux"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/channel"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/container"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/reaper"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/service"
)

type oneConn struct{ c chan net.Conn }

func (o oneConn) Next(ctx context.Context) (io.ReadWriteCloser, error) {
	select {
	case c := <-o.c:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// TestInfoOverYamux runs the agent's ttrpc service behind the dispatcher on
// an in-memory yamux session, the way the shim reaches it.
func TestInfoOverYamux(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	reg := channel.NewRegistry()
	cfg := container.DefaultConfig()
	cfg.StdioTimeout = 100 * time.Millisecond
	svc := &service.Service{
		Containers:    container.NewManager(cfg, reaper.New(), reg),
		KernelRelease: "6.1.0-test",
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	api.RegisterAgentService(srv, svc)
	l := channel.NewListener()
	go srv.Serve(ctx, l)
	guest, host := net.Pipe()
	tr := oneConn{c: make(chan net.Conn, 1)}
	tr.c <- guest
	go channel.NewServer(l, reg).Run(ctx, tr)

	ycfg := yamux.DefaultConfig()
	ycfg.LogOutput = io.Discard
	sess, err := yamux.Client(host, ycfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	st, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if err := api.WriteStreamHeader(st, &api.StreamHeader{Kind: api.StreamHeader_CONTROL}); err != nil {
		t.Fatal(err)
	}
	client := api.NewAgentClient(ttrpc.NewClient(st))

	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	// The host's waitReady retries while the agent answers Unavailable: the
	// kind survives the wire and the host's conversion (runtime agentError).
	if _, err := client.Info(cctx, &api.Empty{}); status.Code(err) != codes.Unavailable || !errdefs.IsUnavailable(errgrpc.ToNative(err)) {
		t.Fatalf("Info before ready: %v, want Unavailable", err)
	}
	svc.SetReady(1234)
	info, err := client.Info(cctx, &api.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if info.AgentVersion != service.Version || info.KernelRelease != "6.1.0-test" || info.ReadyMs != 1234 {
		t.Fatalf("Info = %v", info)
	}

	// Errors carry codes and clear messages over the wire.
	_, err = client.WaitProcess(cctx, &api.WaitProcessRequest{ContainerId: "nope"})
	if status.Code(err) != codes.NotFound || status.Convert(err).Message() != `container "nope": not found` || !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Fatalf("WaitProcess of unknown container: %v", err)
	}
	// A bad request is refused before anything is made.
	_, err = client.CreateContainer(cctx, &api.CreateContainerRequest{ContainerId: "c", RootfsTag: "rootfs",
		Process: &api.Process{Args: []string{"sh"}, Terminal: true}, ResourcesJson: []byte(`{"memory":{"limit":1099511627776000}}`)})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "MiB cannot be met inside it") {
		t.Fatalf("memory limit beyond the VM: %v", err)
	}
	_, err = client.ExecProcess(cctx, &api.ExecProcessRequest{ContainerId: "nope", ExecId: "e1", Process: &api.Process{Args: []string{"true"}}})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("exec in unknown container: %v", err)
	}
	// WaitOOM ends with its call's context.
	octx, ocancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = client.WaitOOM(octx, &api.Empty{})
	ocancel()
	if c := status.Code(err); c != codes.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitOOM after its deadline: %v", err)
	}
	// A create naming a stream the host never opened fails in bounded time.
	_, err = client.CreateContainer(cctx, &api.CreateContainerRequest{ContainerId: "c", RootfsTag: "rootfs",
		Process: &api.Process{Args: []string{"sh"}}, Stdio: &api.Stdio{Stdout: true}})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("missing stdout stream: %v", err)
	}
	t.Log(err)
}
