package channel

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// Key names a stdio stream: which process and which of its streams.
type Key struct {
	ContainerID string
	ExecID      string
	Kind        api.StreamHeader_Kind
}

func (k Key) String() string {
	kind := map[api.StreamHeader_Kind]string{api.StreamHeader_STDIN: "stdin", api.StreamHeader_STDOUT: "stdout", api.StreamHeader_STDERR: "stderr"}[k.Kind]
	if kind == "" {
		kind = k.Kind.String()
	}
	if k.ExecID == "" {
		return fmt.Sprintf("%s stream of container %q", kind, k.ContainerID)
	}
	return fmt.Sprintf("%s stream of exec %q in container %q", kind, k.ExecID, k.ContainerID)
}

// Registry holds stdio streams the host opened until the process they
// belong to takes them.
type Registry struct {
	mu      sync.Mutex
	streams map[Key]entry
	changed chan struct{} // closed and replaced on every Put
}

type entry struct {
	conn  net.Conn
	owner any // the session the stream came from
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{streams: map[Key]entry{}, changed: make(chan struct{})}
}

// Put registers a stream of session owner (any comparable token, nil is
// fine). A stream already registered under the same key and not taken yet
// is closed and replaced (the host reopened it).
func (r *Registry) Put(k Key, c net.Conn, owner any) {
	r.mu.Lock()
	old := r.streams[k].conn
	r.streams[k] = entry{conn: c, owner: owner}
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

// Take removes and returns the stream for k, waiting for it until ctx ends.
func (r *Registry) Take(ctx context.Context, k Key) (net.Conn, error) {
	for {
		r.mu.Lock()
		e, ok := r.streams[k]
		if ok {
			delete(r.streams, k)
		}
		changed := r.changed
		r.mu.Unlock()
		if ok {
			return e.conn, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("no %s: %w", k, ctx.Err())
		}
	}
}

// DropContainer closes and forgets every stream of a container that no
// process took.
func (r *Registry) DropContainer(containerID string) {
	r.drop(func(k Key, e entry) bool { return k.ContainerID == containerID })
}

// DropOwner closes and forgets the untaken streams of a session that ended.
func (r *Registry) DropOwner(owner any) {
	r.drop(func(k Key, e entry) bool { return e.owner == owner })
}

func (r *Registry) drop(match func(Key, entry) bool) {
	r.mu.Lock()
	var drop []net.Conn
	for k, e := range r.streams {
		if match(k, e) {
			drop = append(drop, e.conn)
			delete(r.streams, k)
		}
	}
	r.mu.Unlock()
	for _, c := range drop {
		c.Close()
	}
}

// Len returns how many streams wait to be taken.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.streams)
}
