package vmpool

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/vmm"
)

// VM is a pool's VM: started, idle, and not yet anyone's.
type VM struct {
	// Dir is the directory the Starter was given.
	Dir      string
	Instance *vmm.Instance
	// Files are handed over with the VM, after the pidfds (its console
	// and NIC connections); the pool closes its copies once handed.
	Files []*os.File
	// Stop stops the VM and removes what its Starter made, Dir included;
	// it is called for a VM the pool ends itself, never for one handed
	// over.
	Stop func(ctx context.Context)
}

// Starter starts a VM of shape in dir, a new empty directory.
type Starter func(ctx context.Context, shape Shape, dir string) (*VM, error)

// Server keeps up to Size idle VMs of each shape asked for.
type Server struct {
	// Dir is where each VM gets a directory.
	Dir   string
	Size  int
	Start Starter
	// ShapeIdle drops a shape not asked for within it: its idle VMs are
	// stopped and not started again.
	ShapeIdle time.Duration
	// Exit ends Serve once no VM has been asked for within it.
	Exit time.Duration
	// MaxShapes bounds the shapes kept at once (every distinct memory
	// limit is a shape): asking for one more drops the shape asked for
	// least recently, and its idle VMs. 0 means DefaultMaxShapes.
	MaxShapes int

	mu        sync.Mutex
	shapes    map[string]*shapeVMs
	lastAsked time.Time
	wg        sync.WaitGroup
}

// DefaultMaxShapes is Server.MaxShapes's default.
const DefaultMaxShapes = 4

// shapeVMs are the pool's VMs of one shape.
type shapeVMs struct {
	shape    Shape
	idle     []*VM
	starting int
	// failures in a row hold the next start back until retryAt.
	failures  int
	retryAt   time.Time
	lastAsked time.Time
}

// retryAfter is how long a shape's starts wait after failures in a row:
// doubling from a second, at most a minute.
func retryAfter(failures int) time.Duration {
	d := time.Second << min(failures-1, 6)
	return min(d, time.Minute)
}

// Serve answers the clients of l until ctx ends or no VM has been asked
// for within s.Exit; then it stops every idle VM and returns. VMs of the
// shapes in prime are started at once, as if asked for: the shape of the
// create that found no pool running, for the next one.
func (s *Server) Serve(ctx context.Context, l *net.UnixListener, prime ...Shape) error {
	if s.Size < 1 {
		return fmt.Errorf("vm pool: size %d: at least 1", s.Size)
	}
	s.mu.Lock()
	s.shapes = map[string]*shapeVMs{}
	s.lastAsked = time.Now()
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	for _, shape := range prime {
		s.refillLocked(ctx, s.askLocked(ctx, shape))
	}
	s.mu.Unlock()
	go s.expire(ctx, cancel)
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	for {
		conn, err := l.AcceptUnix()
		if err != nil {
			break
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, conn)
		}()
	}
	s.wg.Wait()
	s.drain(context.WithoutCancel(ctx), func(*shapeVMs) bool { return true })
	return nil
}

// expire drops shapes idle past ShapeIdle and ends the pool idle past
// Exit.
func (s *Server) expire(ctx context.Context, exit context.CancelFunc) {
	tick := time.NewTicker(min(s.ShapeIdle, s.Exit, time.Minute) / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.mu.Lock()
		idle := time.Since(s.lastAsked)
		s.mu.Unlock()
		if idle > s.Exit {
			log.G(ctx).Infof("vm pool: no VM asked for in %s: exiting", idle.Round(time.Second))
			exit()
			return
		}
		s.drain(ctx, func(sv *shapeVMs) bool { return time.Since(sv.lastAsked) > s.ShapeIdle })
	}
}

// drain stops the idle VMs of the shapes drop picks and forgets those
// shapes.
func (s *Server) drain(ctx context.Context, drop func(*shapeVMs) bool) {
	var stop []*VM
	s.mu.Lock()
	for k, sv := range s.shapes {
		if drop(sv) {
			stop = append(stop, sv.idle...)
			sv.idle = nil
			delete(s.shapes, k)
		}
	}
	s.mu.Unlock()
	for _, vm := range stop {
		closeFiles(vm.Files)
		vm.Stop(ctx)
	}
}

// serveConn answers one client: a VM of its shape if one is idle, and a
// start of more of that shape either way.
func (s *Server) serveConn(ctx context.Context, conn *net.UnixConn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReaderSize(conn, 4096).ReadSlice('\n')
	if err != nil {
		log.G(ctx).WithError(err).Warn("vm pool: read a request")
		return
	}
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		log.G(ctx).WithError(err).Warn("vm pool: bad request")
		return
	}
	vm := s.take(ctx, req.Shape)
	if vm == nil {
		_ = writeHandover(conn, Handover{}, nil)
		return
	}
	if err := s.handOver(conn, vm); err != nil {
		log.G(ctx).WithError(err).WithField("dir", vm.Dir).Warn("vm pool: VM not taken over; stopping it")
		closeFiles(vm.Files)
		vm.Stop(ctx)
		return
	}
	closeFiles(vm.Files)
	log.G(ctx).WithField("dir", vm.Dir).Debug("vm pool: VM handed over")
}

// take removes an idle VM of shape from the pool (nil if there is none)
// and starts VMs to bring the shape back to Size.
func (s *Server) take(ctx context.Context, shape Shape) *VM {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv := s.askLocked(ctx, shape)
	var vm *VM
	for len(sv.idle) > 0 && vm == nil {
		vm, sv.idle = sv.idle[0], sv.idle[1:]
		if exited(vm) {
			// Its watcher cleans it up.
			vm = nil
		}
	}
	s.refillLocked(ctx, sv)
	return vm
}

// dropLeastAskedLocked makes room for one more shape: with MaxShapes kept,
// the one asked for least recently goes, its idle VMs stopped.
func (s *Server) dropLeastAskedLocked(ctx context.Context) {
	limit := s.MaxShapes
	if limit <= 0 {
		limit = DefaultMaxShapes
	}
	if len(s.shapes) < limit {
		return
	}
	var oldest string
	for k, sv := range s.shapes {
		if oldest == "" || sv.lastAsked.Before(s.shapes[oldest].lastAsked) {
			oldest = k
		}
	}
	sv := s.shapes[oldest]
	// Not idle any more: their watchers leave them alone.
	stop := sv.idle
	sv.idle = nil
	delete(s.shapes, oldest)
	log.G(ctx).WithField("shape", oldest).Info("vm pool: too many shapes; dropping the one asked for least recently")
	go func() {
		for _, vm := range stop {
			closeFiles(vm.Files)
			vm.Stop(context.WithoutCancel(ctx))
		}
	}()
}

// askLocked records that shape was asked for, now, and returns its VMs
// (a new shape's none).
func (s *Server) askLocked(ctx context.Context, shape Shape) *shapeVMs {
	now := time.Now()
	s.lastAsked = now
	sv := s.shapes[shape.Key()]
	if sv == nil {
		s.dropLeastAskedLocked(ctx)
		sv = &shapeVMs{shape: shape}
		s.shapes[shape.Key()] = sv
	}
	sv.lastAsked = now
	return sv
}

// refillLocked starts VMs of sv's shape until Size are idle or starting.
func (s *Server) refillLocked(ctx context.Context, sv *shapeVMs) {
	if time.Now().Before(sv.retryAt) {
		return
	}
	// One start at a time per shape: starts compete for the host's CPUs
	// with the containers the pool is there to speed up.
	if sv.starting > 0 || len(sv.idle) >= s.Size {
		return
	}
	sv.starting++
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.startOne(context.WithoutCancel(ctx), sv)
	}()
}

// startOne starts one VM of sv's shape and makes it idle.
func (s *Server) startOne(ctx context.Context, sv *shapeVMs) {
	begin := time.Now()
	dir, err := os.MkdirTemp(s.Dir, "vm-")
	var vm *VM
	if err == nil {
		vm, err = s.Start(ctx, sv.shape, dir)
		if err != nil {
			_ = os.Remove(dir)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sv.starting--
	if err != nil {
		sv.failures++
		sv.retryAt = time.Now().Add(retryAfter(sv.failures))
		log.G(ctx).WithError(err).WithField("shape", sv.shape.String()).Warnf("vm pool: start a VM (next try in %s)", retryAfter(sv.failures))
		return
	}
	sv.failures = 0
	if s.shapes[sv.shape.Key()] != sv {
		// Dropped meanwhile.
		go vm.Stop(ctx)
		return
	}
	sv.idle = append(sv.idle, vm)
	log.G(ctx).WithFields(log.Fields{"dir": vm.Dir, "shape": sv.shape.String(), "ms": time.Since(begin).Milliseconds()}).Info("vm pool: VM ready")
	go s.watch(ctx, sv, vm)
	s.refillLocked(ctx, sv)
}

// watch removes an idle VM whose VMM exits from the pool.
func (s *Server) watch(ctx context.Context, sv *shapeVMs, vm *VM) {
	<-vm.Instance.VM.Done()
	s.mu.Lock()
	for i, v := range sv.idle {
		if v == vm {
			sv.idle = append(sv.idle[:i:i], sv.idle[i+1:]...)
			s.mu.Unlock()
			log.G(ctx).WithField("dir", vm.Dir).Warnf("vm pool: an idle VM exited: %v", vm.Instance.VM.ExitError())
			closeFiles(vm.Files)
			vm.Stop(ctx)
			return
		}
	}
	// Handed over (or being handed): no longer the pool's.
	s.mu.Unlock()
}

// exited says vm's VMM has exited.
func exited(vm *VM) bool {
	select {
	case <-vm.Instance.VM.Done():
		return true
	default:
		return false
	}
}

// handOver sends vm to the client on conn and waits for it to take the
// VM over.
func (s *Server) handOver(conn *net.UnixConn, vm *VM) error {
	h := Handover{Found: true, Dir: vm.Dir, VMMPid: vm.Instance.VM.Pid(), Restored: vm.Instance.Restored, FileCount: len(vm.Files)}
	var fds []*os.File
	defer func() { closeFiles(fds) }()
	pidfd, err := vmm.PidfdOpen(h.VMMPid)
	if err != nil {
		return err
	}
	fds = append(fds, pidfd)
	for _, fs := range vm.Instance.FileServers {
		f, err := vmm.PidfdOpen(fs.Pid())
		if err != nil {
			return err
		}
		fds = append(fds, f)
		h.FileServers = append(h.FileServers, FileServer{Pid: fs.Pid(), Socket: fs.Socket()})
	}
	// Opened while the pool is still their parent and they have not been
	// reaped (their watchers would have closed Done): the pidfds are of
	// these processes, not of others that took their PIDs.
	if exited(vm) {
		return errors.New("its VMM exited")
	}
	for _, fs := range vm.Instance.FileServers {
		select {
		case <-fs.Done():
			return errors.New("a file server of it exited")
		default:
		}
	}
	// QEMU's monitor serves one client: the new owner's, from now on.
	if err := vm.Instance.VM.Release(); err != nil {
		return fmt.Errorf("release the VMM's control connection: %w", err)
	}
	if err := writeHandover(conn, h, append(append([]*os.File{}, fds...), vm.Files...)); err != nil {
		return err
	}
	buf := make([]byte, len(accepted))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != accepted {
		return fmt.Errorf("the client did not take it over (%q, %v)", buf, err)
	}
	return nil
}

// writeHandover sends h with files as one message.
func writeHandover(conn *net.UnixConn, h Handover, files []*os.File) error {
	if len(files) > maxFiles {
		return fmt.Errorf("%d descriptors to hand over: at most %d", len(files), maxFiles)
	}
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := conn.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("send the handover: %w", err)
	}
	return nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}
