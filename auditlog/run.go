package auditlog

import (
	"container/heap"
	"context"
	"time"
)

// Options say which records Show writes, and how.
type Options struct {
	// Dir is the audit directory (the runtime config's audit_dir).
	Dir string
	// Namespace limits the search to one containerd namespace; "" looks
	// in all.
	Namespace string
	// Container is the container's ID or a unique prefix of it; "" with
	// All shows every container.
	Container string
	All       bool
	Filter    Filter
	// Follow keeps writing records as they are written, until the
	// context is done; with All, also those of containers that start
	// meanwhile.
	Follow bool
	// Poll is how often Follow looks for new records (default 250ms).
	Poll time.Duration
}

// Show writes the records o selects to w, oldest first; with several
// containers, their records are merged by time. Lines that are not
// records are passed to report, and skipped.
func Show(ctx context.Context, o Options, w Writer, report func(Problem)) error {
	sources, err := o.sources()
	if err != nil {
		return err
	}
	// Two passes, so that the table's columns fit the records without
	// holding them: the first only measures.
	if _, isJSON := w.(*JSONWriter); !isJSON {
		readers, err := openAll(sources, o.Filter, func(Problem) {})
		if err != nil {
			return err
		}
		err = merge(readers, func(e Entry) error { w.Measure(e); return nil })
		closeAll(readers)
		if err != nil {
			return err
		}
	}
	if t, ok := w.(*TableWriter); ok {
		if o.Follow {
			t.roomForFollow()
		}
		if err := t.Header(); err != nil {
			return err
		}
	}
	readers, err := openAll(sources, o.Filter, report)
	if err != nil {
		return err
	}
	defer func() { closeAll(readers) }()
	if err := merge(readers, w.Write); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if !o.Follow {
		for _, r := range readers {
			r.finish()
		}
		return nil
	}
	return o.follow(ctx, &readers, w, report)
}

func (o Options) sources() ([]Source, error) {
	if o.All {
		return List(o.Dir, o.Namespace)
	}
	s, err := Find(o.Dir, o.Namespace, o.Container)
	if err != nil {
		return nil, err
	}
	return []Source{s}, nil
}

func openAll(sources []Source, f Filter, report func(Problem)) ([]*sourceReader, error) {
	readers := make([]*sourceReader, 0, len(sources))
	for _, s := range sources {
		r, err := openSource(s, f, report)
		if err != nil {
			closeAll(readers)
			return nil, err
		}
		readers = append(readers, r)
	}
	return readers, nil
}

func closeAll(readers []*sourceReader) {
	for _, r := range readers {
		r.close()
	}
}

// merge writes the readers' records up to their current ends, by time:
// each file is in time order (the shim writes a container's records
// under one lock), so holding one record per container is enough.
func merge(readers []*sourceReader, write func(Entry) error) error {
	h := &entryHeap{}
	for i, r := range readers {
		e, ok, err := r.next()
		if err != nil {
			return err
		}
		if ok {
			h.items = append(h.items, headEntry{e, i})
		}
	}
	heap.Init(h)
	for h.Len() > 0 {
		top := h.items[0]
		if err := write(top.Entry); err != nil {
			return err
		}
		e, ok, err := readers[top.src].next()
		if err != nil {
			return err
		}
		if ok {
			h.items[0] = headEntry{e, top.src}
			heap.Fix(h, 0)
		} else {
			heap.Pop(h)
		}
	}
	return nil
}

type headEntry struct {
	Entry
	src int
}

type entryHeap struct{ items []headEntry }

func (h *entryHeap) Len() int { return len(h.items) }
func (h *entryHeap) Less(i, j int) bool {
	a, b := h.items[i], h.items[j]
	if !a.Time.Equal(b.Time) {
		return a.Time.Before(b.Time)
	}
	return a.src < b.src
}
func (h *entryHeap) Swap(i, j int) { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *entryHeap) Push(x any)    { h.items = append(h.items, x.(headEntry)) }
func (h *entryHeap) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}

// rescanEvery is how many polls pass between looks for new containers'
// files (with All).
const rescanEvery = 4

// follow polls the readers for new records until ctx is done. Polling,
// not inotify: a rotation renames the file, a new container's file
// appears in a directory that may not exist yet, and a quarter second is
// quick enough for a person watching.
func (o Options) follow(ctx context.Context, readers *[]*sourceReader, w Writer, report func(Problem)) error {
	poll := o.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	known := map[string]bool{}
	for _, r := range *readers {
		known[r.src.Name()] = true
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if o.All && n%rescanEvery == 0 {
			sources, err := List(o.Dir, o.Namespace)
			if err != nil {
				return err
			}
			for _, s := range sources {
				if known[s.Name()] {
					continue
				}
				known[s.Name()] = true
				r, err := openSource(s, o.Filter, report)
				if err != nil {
					return err
				}
				*readers = append(*readers, r)
			}
		}
		for _, r := range *readers {
			for {
				if err := drain(r, w); err != nil {
					return err
				}
				// After a rotation the new file is read at once.
				rotated, err := r.rotate()
				if err != nil {
					return err
				}
				if !rotated {
					break
				}
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

func drain(r *sourceReader, w Writer) error {
	for {
		e, ok, err := r.next()
		if err != nil || !ok {
			return err
		}
		if err := w.Write(e); err != nil {
			return err
		}
	}
}
