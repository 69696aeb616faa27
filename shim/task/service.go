// Package task maps containerd's task API (v3, ttrpc) onto package runtime
// and publishes the task events containerd expects.
package task

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/mount"
	cdruntime "github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/earendil-works/gondolin-containerd/config"
	"github.com/earendil-works/gondolin-containerd/runtime"
)

// service is the shim's task service.
type service struct {
	ctx       context.Context
	publisher shim.Publisher
	shutdown  shutdown.Service
	namespace string
	events    chan any
	// forwarded is closed once every event has been published.
	forwarded chan struct{}

	// lifecycleMu orders events: a TaskStart is queued before the
	// TaskExit of the same process.
	lifecycleMu sync.Mutex

	mu sync.Mutex
	rt *runtime.Runtime
}

var _ taskAPI.TTRPCTaskService = (*service)(nil)

// NewService returns the task service of one shim process.
func NewService(ctx context.Context, publisher shim.Publisher, sd shutdown.Service) (taskAPI.TTRPCTaskService, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	s := &service{
		ctx:       ctx,
		publisher: publisher,
		shutdown:  sd,
		namespace: ns,
		events:    make(chan any, 128),
		forwarded: make(chan struct{}),
	}
	go s.forward(ctx)
	sd.RegisterCallback(func(ctx context.Context) error {
		// The shim process exits once the callbacks return: wait until
		// the last events (TaskDelete) have reached containerd.
		close(s.events)
		select {
		case <-s.forwarded:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("events not all published before shutdown: %w", ctx.Err())
		}
	})
	return s, nil
}

// RegisterTTRPC registers the service on the shim's server.
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

func (s *service) runtime(ctx context.Context, options *runtimeoptions.Options) (*runtime.Runtime, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rt != nil {
		return s.rt, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var configPath string
	if options != nil {
		configPath = options.ConfigPath
	}
	cfg, err := config.Load(configPath, filepath.Dir(exe))
	if err != nil {
		return nil, err
	}
	if !shimDebug(ctx) {
		if err := log.SetLevel(cfg.LogLevel); err != nil {
			return nil, err
		}
	}
	s.rt = runtime.New(runtime.Config{
		Runtime:    cfg,
		ConfigPath: configPath,
		Namespace:  s.namespace,
		OnExit:     s.onExit,
		OnOOM:      s.onOOM,
	})
	return s.rt, nil
}

func shimDebug(ctx context.Context) bool {
	opts, ok := ctx.Value(shim.OptsKey{}).(shim.Opts)
	return ok && opts.Debug
}

func (s *service) getRuntime() (*runtime.Runtime, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rt == nil {
		return nil, fmt.Errorf("no container in this shim: %w", errdefs.ErrNotFound)
	}
	return s.rt, nil
}

func (s *service) container(id string) (*runtime.Container, error) {
	rt, err := s.getRuntime()
	if err != nil {
		return nil, err
	}
	return rt.Get(id)
}

func (s *service) process(id, execID string) (*runtime.Container, *runtime.Process, error) {
	c, err := s.container(id)
	if err != nil {
		return nil, nil, err
	}
	p, err := c.Process(execID)
	if err != nil {
		return nil, nil, err
	}
	return c, p, nil
}

// Create boots the container's VM and prepares its process.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, err error) {
	defer func() { err = errgrpc.ToGRPC(err) }()
	if r.Checkpoint != "" {
		return nil, fmt.Errorf("restoring from a checkpoint is not supported by gondolin: %w", errdefs.ErrNotImplemented)
	}
	opts, err := runtimeOptions(r.Options)
	if err != nil {
		return nil, err
	}
	rt, err := s.runtime(ctx, opts)
	if err != nil {
		return nil, err
	}
	mounts := make([]mount.Mount, 0, len(r.Rootfs))
	for _, m := range r.Rootfs {
		mounts = append(mounts, mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	c, err := rt.Create(ctx, runtime.CreateOpts{
		ID:     r.ID,
		Bundle: r.Bundle,
		Rootfs: mounts,
		Stdio:  runtime.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
	})
	if err != nil {
		return nil, err
	}
	st, err := c.State("")
	if err != nil {
		return nil, err
	}
	s.send(&eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Pid:         st.Pid,
	})
	return &taskAPI.CreateTaskResponse{Pid: st.Pid}, nil
}

// runtimeOptions reads containerd's runtime options (runtimeoptions.v1,
// whose ConfigPath names the runtime config). Other option types are an
// error: silently ignoring an operator's settings would be worse.
func runtimeOptions(any *anypb.Any) (*runtimeoptions.Options, error) {
	if any == nil || len(any.GetValue()) == 0 && any.GetTypeUrl() == "" {
		return nil, nil
	}
	v, err := typeurl.UnmarshalAny(any)
	if err != nil {
		return nil, fmt.Errorf("decode runtime options %s: %w", any.GetTypeUrl(), err)
	}
	opts, ok := v.(*runtimeoptions.Options)
	if !ok {
		return nil, fmt.Errorf("runtime options of type %T are not accepted: use runtimeoptions.v1.Options (ConfigPath): %w", v, errdefs.ErrInvalidArgument)
	}
	return opts, nil
}

// Start runs the container's process.
func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (_ *taskAPI.StartResponse, err error) {
	defer func() { err = errgrpc.ToGRPC(err) }()
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	p, err := c.Process(r.ExecID)
	if err != nil {
		return nil, err
	}
	s.lifecycleMu.Lock()
	defer s.lifecycleMu.Unlock()
	var pid uint32
	if r.ExecID == "" {
		// The container's start: hooks and network, then the init.
		pid, err = c.Start(ctx)
	} else {
		pid, err = p.Start(ctx)
	}
	if err != nil {
		return nil, err
	}
	if r.ExecID == "" {
		s.send(&eventstypes.TaskStart{ContainerID: r.ID, Pid: pid})
	} else {
		s.send(&eventstypes.TaskExecStarted{ContainerID: r.ID, ExecID: r.ExecID, Pid: pid})
	}
	return &taskAPI.StartResponse{Pid: pid}, nil
}

// onOOM queues a TaskOOM. The guest raises these (at most
// limits.guest_events_per_second, runtime.relayOOM), so no lock is held
// while the event waits for room in the queue: a flood must not hold up
// starts and exits.
func (s *service) onOOM(containerID string) {
	s.send(&eventstypes.TaskOOM{ContainerID: containerID})
}

func (s *service) onExit(e runtime.Exit) {
	s.lifecycleMu.Lock()
	defer s.lifecycleMu.Unlock()
	id := e.ExecID
	if id == "" {
		id = e.ContainerID
	}
	s.send(&eventstypes.TaskExit{
		ContainerID: e.ContainerID,
		ID:          id,
		Pid:         e.Pid,
		ExitStatus:  e.Status,
		ExitedAt:    protobuf.ToTimestamp(e.ExitedAt),
	})
}

// Delete removes a stopped container and its VM.
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (_ *taskAPI.DeleteResponse, err error) {
	defer func() { err = errgrpc.ToGRPC(err) }()
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if r.ExecID != "" {
		exit, err := c.DeleteExec(ctx, r.ExecID)
		if err != nil {
			return nil, err
		}
		return &taskAPI.DeleteResponse{Pid: exit.Pid, ExitStatus: exit.Status, ExitedAt: protobuf.ToTimestamp(exit.ExitedAt)}, nil
	}
	exit, err := c.Delete(ctx)
	if err != nil {
		return nil, err
	}
	s.send(&eventstypes.TaskDelete{
		ContainerID: r.ID,
		Pid:         exit.Pid,
		ExitStatus:  exit.Status,
		ExitedAt:    protobuf.ToTimestamp(exit.ExitedAt),
	})
	return &taskAPI.DeleteResponse{Pid: exit.Pid, ExitStatus: exit.Status, ExitedAt: protobuf.ToTimestamp(exit.ExitedAt)}, nil
}

// State reports a process's state.
func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (_ *taskAPI.StateResponse, err error) {
	defer func() { err = errgrpc.ToGRPC(err) }()
	c, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st := p.State()
	status := task.Status_UNKNOWN
	switch st.Status {
	case runtime.StatusCreated:
		status = task.Status_CREATED
	case runtime.StatusRunning:
		status = task.Status_RUNNING
	case runtime.StatusStopped:
		status = task.Status_STOPPED
	case runtime.StatusPaused:
		status = task.Status_PAUSED
	}
	return &taskAPI.StateResponse{
		ID:         r.ID,
		ExecID:     r.ExecID,
		Bundle:     c.Bundle,
		Pid:        st.Pid,
		Status:     status,
		Stdin:      st.Stdio.Stdin,
		Stdout:     st.Stdio.Stdout,
		Stderr:     st.Stdio.Stderr,
		Terminal:   st.Stdio.Terminal,
		ExitStatus: st.ExitStatus,
		ExitedAt:   protobuf.ToTimestamp(st.ExitedAt),
	}, nil
}

// Wait blocks until the process exits.
func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (_ *taskAPI.WaitResponse, err error) {
	defer func() { err = errgrpc.ToGRPC(err) }()
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	exit, err := p.Wait(ctx)
	if err != nil {
		return nil, err
	}
	return &taskAPI.WaitResponse{ExitStatus: exit.Status, ExitedAt: protobuf.ToTimestamp(exit.ExitedAt)}, nil
}

// Kill signals the process, or all of the container's processes.
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (_ *emptypb.Empty, err error) {
	defer func() { err = errgrpc.ToGRPC(err) }()
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if err := p.Kill(ctx, r.Signal, r.All); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// Connect returns the shim's and the task's PIDs.
func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (_ *taskAPI.ConnectResponse, err error) {
	defer func() { err = errgrpc.ToGRPC(err) }()
	resp := &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid())}
	if c, err := s.container(r.ID); err == nil {
		if st, err := c.State(""); err == nil {
			resp.TaskPid = st.Pid
		}
	}
	return resp, nil
}

// Shutdown ends the shim once it serves no container.
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	busy := s.rt != nil && s.rt.Len() > 0
	s.mu.Unlock()
	if !busy {
		s.shutdown.Shutdown()
	}
	return &emptypb.Empty{}, nil
}

// Pids lists the container's processes as the guest sees them.
func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (_ *taskAPI.PidsResponse, err error) {
	defer func() { err = errgrpc.ToGRPC(err) }()
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	procs, err := c.Pids(ctx)
	if err != nil {
		return nil, err
	}
	resp := &taskAPI.PidsResponse{}
	for _, p := range procs {
		resp.Processes = append(resp.Processes, &task.ProcessInfo{Pid: p.Pid})
	}
	return resp, nil
}

// Pause stops the container's VM.
func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (_ *emptypb.Empty, err error) {
	defer func() { err = errgrpc.ToGRPC(err) }()
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if err := c.Pause(ctx); err != nil {
		return nil, err
	}
	s.send(&eventstypes.TaskPaused{ContainerID: r.ID})
	return &emptypb.Empty{}, nil
}

// Resume lets a paused container's VM run again.
func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (_ *emptypb.Empty, err error) {
	defer func() { err = errgrpc.ToGRPC(err) }()
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if err := c.Resume(ctx); err != nil {
		return nil, err
	}
	s.send(&eventstypes.TaskResumed{ContainerID: r.ID})
	return &emptypb.Empty{}, nil
}

// Checkpoint is not supported.
func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("checkpoint is not supported by gondolin: %w", errdefs.ErrNotImplemented))
}

// Exec prepares another process in the container.
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (_ *emptypb.Empty, err error) {
	defer func() { err = errgrpc.ToGRPC(err) }()
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	var spec specs.Process
	if r.Spec == nil {
		return nil, fmt.Errorf("exec %s has no process spec: %w", r.ExecID, errdefs.ErrInvalidArgument)
	}
	if err := json.Unmarshal(r.Spec.Value, &spec); err != nil {
		return nil, fmt.Errorf("decode exec process spec: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if _, err := c.Exec(ctx, r.ExecID, &spec, runtime.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}); err != nil {
		return nil, err
	}
	s.send(&eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return &emptypb.Empty{}, nil
}

// ResizePty sets a process's terminal size.
func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (_ *emptypb.Empty, err error) {
	defer func() { err = errgrpc.ToGRPC(err) }()
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if err := p.ResizePty(ctx, r.Width, r.Height); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// CloseIO closes a process's stdin.
func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (_ *emptypb.Empty, err error) {
	defer func() { err = errgrpc.ToGRPC(err) }()
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.Stdin {
		if err := p.CloseIO(); err != nil {
			return nil, err
		}
	}
	return &emptypb.Empty{}, nil
}

// Update changes the container's resource limits in the guest.
func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (_ *emptypb.Empty, err error) {
	defer func() { err = errgrpc.ToGRPC(err) }()
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	var res specs.LinuxResources
	if r.Resources != nil && len(r.Resources.Value) > 0 {
		if err := json.Unmarshal(r.Resources.Value, &res); err != nil {
			return nil, fmt.Errorf("decode resources: %w: %w", err, errdefs.ErrInvalidArgument)
		}
	}
	if err := c.Update(ctx, &res); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// Stats returns cgroup v2 metrics: CPU and memory measured on the host (the
// container's host cgroup, holding its VM's processes), the rest in the
// guest; see runtime.Container.Stats.
func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (_ *taskAPI.StatsResponse, err error) {
	defer func() { err = errgrpc.ToGRPC(err) }()
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	b, err := c.Stats(ctx)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: &anypb.Any{TypeUrl: runtime.StatsTypeURL, Value: b}}, nil
}

func (s *service) send(evt any) {
	s.events <- evt
}

// forward publishes events in order on containerd's event service.
func (s *service) forward(ctx context.Context) {
	ns, _ := namespaces.Namespace(ctx)
	ctx = namespaces.WithNamespace(context.Background(), ns)
	defer close(s.forwarded)
	for e := range s.events {
		if err := s.publisher.Publish(ctx, topic(e), e); err != nil {
			log.G(ctx).WithError(err).Error("publish event")
		}
	}
	s.publisher.Close()
}

func topic(e any) string {
	switch e.(type) {
	case *eventstypes.TaskCreate:
		return cdruntime.TaskCreateEventTopic
	case *eventstypes.TaskStart:
		return cdruntime.TaskStartEventTopic
	case *eventstypes.TaskExit:
		return cdruntime.TaskExitEventTopic
	case *eventstypes.TaskDelete:
		return cdruntime.TaskDeleteEventTopic
	case *eventstypes.TaskOOM:
		return cdruntime.TaskOOMEventTopic
	case *eventstypes.TaskPaused:
		return cdruntime.TaskPausedEventTopic
	case *eventstypes.TaskResumed:
		return cdruntime.TaskResumedEventTopic
	case *eventstypes.TaskExecAdded:
		return cdruntime.TaskExecAddedEventTopic
	case *eventstypes.TaskExecStarted:
		return cdruntime.TaskExecStartedEventTopic
	}
	return cdruntime.TaskUnknownTopic
}
