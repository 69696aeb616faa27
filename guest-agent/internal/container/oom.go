package container

import (
	"bufio"
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agentlog"
)

// maxQueuedOOM bounds the OOM events kept while nobody asks for them.
const maxQueuedOOM = 4096

// ParseOOMKills returns the oom_kill count of a cgroup's memory.events.
func ParseOOMKills(r io.Reader) (uint64, bool) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "oom_kill" {
			v, err := strconv.ParseUint(f[1], 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// NewKills is how many OOM kills happened between two readings of the
// counter. A counter that went down belongs to a new cgroup: all of it is
// new.
func NewKills(prev, now uint64) uint64 {
	if now >= prev {
		return now - prev
	}
	return now
}

type oomEntry struct {
	// mu orders readings of the counter, so a stale one never counts.
	mu    sync.Mutex
	id    string
	file  string // memory.events
	wd    int    // inotify watch, -1 when polled
	count uint64
}

// oomWatcher turns increases of each container cgroup's oom_kill count
// into queued events, one per kill, until WaitOOM takes them. Changes are
// noticed through inotify on memory.events (the kernel notifies a
// modification), with a poll every PollInterval as a fallback.
type oomWatcher struct {
	PollInterval time.Duration

	mu      sync.Mutex
	entries map[string]*oomEntry
	byWd    map[int]*oomEntry
	queue   []string
	changed chan struct{} // closed and replaced when the queue grows

	startOnce sync.Once
	inotify   *os.File
}

func newOOMWatcher() *oomWatcher {
	return &oomWatcher{
		PollInterval: time.Second,
		entries:      map[string]*oomEntry{},
		byWd:         map[int]*oomEntry{},
		changed:      make(chan struct{}),
	}
}

func (w *oomWatcher) start() {
	w.startOnce.Do(func() {
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
		if err != nil {
			agentlog.Warnf("OOM events: inotify: %v; polling instead", err)
		} else {
			w.inotify = os.NewFile(uintptr(fd), "inotify")
			go w.readEvents()
		}
		go w.poll()
	})
}

// add starts watching a container's cgroup (memory.events below it).
func (w *oomWatcher) add(id, cgroup string) {
	w.start()
	e := &oomEntry{id: id, file: filepath.Join(cgroup, "memory.events"), wd: -1}
	if w.inotify != nil {
		rc, err := w.inotify.SyscallConn()
		if err == nil {
			var werr error
			_ = rc.Control(func(fd uintptr) {
				e.wd, werr = unix.InotifyAddWatch(int(fd), e.file, unix.IN_MODIFY)
			})
			if werr != nil {
				e.wd = -1
				if errors.Is(werr, unix.ENOENT) {
					agentlog.Warnf("container %s: no %s (memory controller off?): no OOM events", id, e.file)
					return
				}
				agentlog.Warnf("container %s: watch %s: %v; polling", id, e.file, werr)
			}
		}
	}
	e.count, _ = readOOMKills(e.file)
	w.mu.Lock()
	defer w.mu.Unlock()
	if old := w.entries[id]; old != nil {
		w.unwatchLocked(old)
	}
	w.entries[id] = e
	if e.wd >= 0 {
		w.byWd[e.wd] = e
	}
}

// remove stops watching, after a last look at the counter.
func (w *oomWatcher) remove(id string) {
	w.check(id)
	w.mu.Lock()
	defer w.mu.Unlock()
	if e := w.entries[id]; e != nil {
		w.unwatchLocked(e)
		delete(w.entries, id)
	}
}

func (w *oomWatcher) unwatchLocked(e *oomEntry) {
	if e.wd < 0 {
		return
	}
	delete(w.byWd, e.wd)
	if rc, err := w.inotify.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _, _ = unix.InotifyRmWatch(int(fd), uint32(e.wd)) })
	}
	e.wd = -1
}

// check reads a container's counter now and queues what is new.
func (w *oomWatcher) check(id string) {
	w.mu.Lock()
	e := w.entries[id]
	w.mu.Unlock()
	if e != nil {
		w.update(e)
	}
}

func (w *oomWatcher) update(e *oomEntry) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n, ok := readOOMKills(e.file)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.entries[e.id] != e {
		return // removed meanwhile
	}
	k := NewKills(e.count, n)
	e.count = n
	if k == 0 {
		return
	}
	agentlog.Infof("container %s: %d process(es) killed by the OOM killer", e.id, k)
	w.pushLocked(e.id, k)
}

func (w *oomWatcher) pushLocked(id string, k uint64) {
	for ; k > 0; k-- {
		if len(w.queue) >= maxQueuedOOM {
			agentlog.Warnf("OOM event queue full; dropping the oldest")
			w.queue = w.queue[1:]
		}
		w.queue = append(w.queue, id)
	}
	close(w.changed)
	w.changed = make(chan struct{})
}

// Wait returns the next OOM event's container id, waiting until there is
// one or ctx ends (then the queue is untouched).
func (w *oomWatcher) Wait(ctx context.Context) (string, error) {
	for {
		w.mu.Lock()
		if len(w.queue) > 0 && ctx.Err() == nil {
			id := w.queue[0]
			w.queue = w.queue[1:]
			w.mu.Unlock()
			return id, nil
		}
		if err := ctx.Err(); err != nil {
			w.mu.Unlock()
			return "", err
		}
		changed := w.changed
		w.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

func (w *oomWatcher) readEvents() {
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.inotify.Read(buf)
		if err != nil {
			agentlog.Warnf("OOM events: read inotify: %v; polling only", err)
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += unix.SizeofInotifyEvent + int(ev.Len)
			w.mu.Lock()
			e := w.byWd[int(ev.Wd)]
			w.mu.Unlock()
			if e != nil {
				w.update(e)
			}
		}
	}
}

// poll looks at every counter now and then: the fallback when inotify is
// missing, and a safety net if a notification was ever missed.
func (w *oomWatcher) poll() {
	for {
		time.Sleep(w.PollInterval)
		w.mu.Lock()
		es := slices.Collect(maps.Values(w.entries))
		w.mu.Unlock()
		for _, e := range es {
			w.update(e)
		}
	}
}

func readOOMKills(file string) (uint64, bool) {
	f, err := os.Open(file)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	return ParseOOMKills(f)
}
