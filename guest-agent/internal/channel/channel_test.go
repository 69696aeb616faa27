package channel

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// pipeTransport hands out one end of a net.Pipe per session; the test holds
// the other ends.
type pipeTransport struct{ conns chan net.Conn }

func (t *pipeTransport) Next(ctx context.Context) (io.ReadWriteCloser, error) {
	select {
	case c := <-t.conns:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// hostSession connects a yamux client (the host side) to a new session of srv.
func hostSession(t *testing.T, tr *pipeTransport) *yamux.Session {
	t.Helper()
	guest, host := net.Pipe()
	tr.conns <- guest
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	sess, err := yamux.Client(host, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess
}

func openStream(t *testing.T, sess *yamux.Session, h *api.StreamHeader) net.Conn {
	t.Helper()
	st, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if err := api.WriteStreamHeader(st, h); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestRegistryTakeWaitsForPut(t *testing.T) {
	r := NewRegistry()
	k := Key{ContainerID: "c", Kind: api.StreamHeader_STDOUT}
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		time.Sleep(20 * time.Millisecond)
		r.Put(Key{ContainerID: "other", Kind: api.StreamHeader_STDOUT}, b, nil) // wakes Take, wrong key
		r.Put(k, a, nil)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := r.Take(ctx, k)
	if err != nil || got != a {
		t.Fatalf("Take = %v, %v", got, err)
	}
	if r.Len() != 1 {
		t.Fatalf("Len = %d, want 1", r.Len())
	}
	r.DropContainer("other")
	if r.Len() != 0 {
		t.Fatalf("Len after drop = %d", r.Len())
	}
}

func TestRegistryTakeTimeout(t *testing.T) {
	r := NewRegistry()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := r.Take(ctx, Key{ContainerID: "c", ExecID: "e", Kind: api.StreamHeader_STDERR})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if want := `no stderr stream of exec "e" in container "c"`; err.Error()[:len(want)] != want {
		t.Fatalf("err = %q", err)
	}
}

func TestRegistryPutReplacesUntaken(t *testing.T) {
	r := NewRegistry()
	k := Key{ContainerID: "c", Kind: api.StreamHeader_STDIN}
	old, oldPeer := net.Pipe()
	r.Put(k, old, nil)
	nw, nwPeer := net.Pipe()
	defer nwPeer.Close()
	r.Put(k, nw, nil)
	// the replaced stream is closed
	if _, err := oldPeer.Read(make([]byte, 1)); err == nil {
		t.Fatal("replaced stream still open")
	}
	got, _ := r.Take(context.Background(), k)
	if got != nw {
		t.Fatal("Take returned the replaced stream")
	}
}

func TestDispatcherRoutesStreams(t *testing.T) {
	l := NewListener()
	defer l.Close()
	reg := NewRegistry()
	srv := NewServer(l, reg)
	srv.HeaderTimeout = 200 * time.Millisecond
	tr := &pipeTransport{conns: make(chan net.Conn, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Run(ctx, tr)

	sess := hostSession(t, tr)
	out := openStream(t, sess, &api.StreamHeader{Kind: api.StreamHeader_STDOUT, ContainerId: "c1"})
	ctl := openStream(t, sess, &api.StreamHeader{Kind: api.StreamHeader_CONTROL})

	// The control stream reaches the listener, header consumed.
	if _, err := ctl.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	gctl, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(gctl, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("control stream read %q, %v", buf, err)
	}

	// The stdout stream is registered; what the guest writes and closes
	// reaches the host followed by EOF.
	tctx, tcancel := context.WithTimeout(ctx, 5*time.Second)
	defer tcancel()
	gout, err := reg.Take(tctx, Key{ContainerID: "c1", Kind: api.StreamHeader_STDOUT})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		gout.Write([]byte("hello"))
		gout.Close()
	}()
	b, err := io.ReadAll(out)
	if err != nil || string(b) != "hello" {
		t.Fatalf("host read %q, %v", b, err)
	}

	// Bad streams are closed: unknown kind, stdio without container id,
	// and a stream that never sends its header.
	for _, h := range []*api.StreamHeader{{Kind: 42}, {Kind: api.StreamHeader_STDIN}} {
		st := openStream(t, sess, h)
		if _, err := io.ReadAll(st); err != nil {
			t.Fatalf("header %v: %v", h, err)
		}
	}
	silent, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	silent.Write([]byte{0}) // SYN; then nothing
	if _, err := io.ReadAll(silent); err != nil {
		t.Fatalf("silent stream: %v", err)
	}
	if reg.Len() != 0 {
		t.Fatalf("registry holds %d streams", reg.Len())
	}
}

func TestNewSessionAfterHostDisconnect(t *testing.T) {
	l := NewListener()
	defer l.Close()
	reg := NewRegistry()
	srv := NewServer(l, reg)
	tr := &pipeTransport{conns: make(chan net.Conn, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, tr) }()

	for i := range 3 {
		sess := hostSession(t, tr)
		// An stdio stream nobody takes is dropped with its session.
		openStream(t, sess, &api.StreamHeader{Kind: api.StreamHeader_STDOUT, ContainerId: "c"})
		openStream(t, sess, &api.StreamHeader{Kind: api.StreamHeader_CONTROL})
		c, err := l.Accept()
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		sess.Close() // the host goes away
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("session %d: control stream survived the session", i)
		}
		deadline := time.Now().Add(5 * time.Second)
		for reg.Len() != 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if reg.Len() != 0 {
			t.Fatalf("session %d: untaken stream kept after the session ended", i)
		}
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func TestFindPort(t *testing.T) {
	dir := t.TempDir()
	for name, port := range map[string]string{"vport1p1": "org.qemu.guest_agent.0", "vport2p1": api.ChannelPortName} {
		if err := mkfile(dir+"/"+name, "name", port+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	dev, err := FindPort(dir, api.ChannelPortName)
	if err != nil || dev != "/dev/vport2p1" {
		t.Fatalf("FindPort = %q, %v", dev, err)
	}
	if _, err := FindPort(dir, "nope"); !errors.As(err, &ErrNoPort{}) {
		t.Fatalf("missing port: %v", err)
	}
}
