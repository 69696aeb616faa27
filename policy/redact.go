package policy

import (
	"bytes"
	"errors"
	"io"
)

// pattern is one string the stream matcher looks for.
type pattern struct {
	from []byte
	to   []byte
	// fold matches ASCII case-insensitively; from is then lower case.
	fold bool
	// name is the secret the pattern belongs to.
	name string
}

// matcher finds secret forms in text: leftmost match first, the longest
// pattern at the same position.
type matcher struct {
	pats   []pattern
	maxLen int
	fold   bool
}

func newMatcher(pats []pattern) *matcher {
	m := &matcher{}
	seen := map[string]bool{}
	for _, p := range pats {
		if len(p.from) == 0 {
			continue
		}
		k := string(p.from)
		if p.fold {
			k = "\x00" + k
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		m.pats = append(m.pats, p)
		m.maxLen = max(m.maxLen, len(p.from))
		m.fold = m.fold || p.fold
	}
	if len(m.pats) == 0 {
		return nil
	}
	return m
}

func asciiLower(dst, b []byte) []byte {
	dst = append(dst[:0], b...)
	for i, c := range dst {
		if c >= 'A' && c <= 'Z' {
			dst[i] = c + 'a' - 'A'
		}
	}
	return dst
}

// scan walks the matches in b that start before limit, calling fn with
// each one's position and pattern; matches do not overlap. fn returns
// false to stop. scan returns where the last match ended (0 if none).
func (m *matcher) scan(b []byte, lower []byte, limit int, fn func(at int, p *pattern) bool) int {
	next := make([]int, len(m.pats))
	for i := range next {
		next[i] = -2 // not searched yet
	}
	pos := 0
	for pos < limit {
		best, bi := -1, -1
		for i := range m.pats {
			p := &m.pats[i]
			if next[i] == -2 || next[i] >= 0 && next[i] < pos {
				hay := b
				if p.fold {
					hay = lower
				}
				next[i] = -1
				if j := bytes.Index(hay[pos:], p.from); j >= 0 {
					next[i] = pos + j
				}
			}
			at := next[i]
			if at < 0 || at >= limit {
				continue
			}
			if best < 0 || at < best || at == best && len(p.from) > len(m.pats[bi].from) {
				best, bi = at, i
			}
		}
		if best < 0 {
			break
		}
		if !fn(best, &m.pats[bi]) {
			return pos
		}
		pos = best + len(m.pats[bi].from)
	}
	return pos
}

// partial returns the length of the longest tail of b that is a proper
// prefix of a pattern: a match that may complete with more data. Every
// match starting before it is decided by b alone.
func (m *matcher) partial(b, lower []byte) int {
	start := max(0, len(b)-m.maxLen+1)
	for i := start; i < len(b); i++ {
		for j := range m.pats {
			p := &m.pats[j]
			hay := b
			if p.fold {
				hay = lower
			}
			if tail := hay[i:]; len(tail) < len(p.from) && tail[0] == p.from[0] && bytes.HasPrefix(p.from, tail) {
				return len(b) - i
			}
		}
	}
	return 0
}

// replace returns s with every match replaced.
func (m *matcher) replace(s string) string {
	if m == nil || len(s) == 0 {
		return s
	}
	b := []byte(s)
	var lower []byte
	if m.fold {
		lower = asciiLower(nil, b)
	}
	var out []byte
	last := 0
	changed := false
	m.scan(b, lower, len(b), func(at int, p *pattern) bool {
		out = append(out, b[last:at]...)
		out = append(out, p.to...)
		last = at + len(p.from)
		changed = true
		return true
	})
	if !changed {
		return s
	}
	return string(append(out, b[last:]...))
}

// first returns the name of the first secret form in s, or "".
func (m *matcher) first(s string) string {
	if m == nil || len(s) == 0 {
		return ""
	}
	b := []byte(s)
	var lower []byte
	if m.fold {
		lower = asciiLower(nil, b)
	}
	name := ""
	m.scan(b, lower, len(b), func(_ int, p *pattern) bool {
		name = p.name
		return false
	})
	return name
}

// errSecretInStream ends a stream that carried a secret form where it may
// not go.
var errSecretInStream = errors.New("policy: a secret was found in the stream")

// streamFilter passes a stream through a matcher: in replace mode every
// match is replaced, otherwise the first match ends the stream with
// onMatch's error before any byte of the match is passed on. A match
// split across reads is found because the last maxLen-1 bytes are held
// back until more data (or the end) arrives.
type streamFilter struct {
	src     io.Reader
	closer  io.Closer
	m       *matcher
	replace bool
	// onMatch is called once, in fail mode, with the secret's name; its
	// error (errSecretInStream if nil) is what Read returns from then on.
	onMatch func(name string) error
	// atEOF is called when the source ends; an error it returns is
	// returned instead of io.EOF (trailers are checked here).
	atEOF func() error

	pending []byte
	lower   []byte
	out     []byte
	outOff  int
	buf     []byte
	err     error
}

const filterChunk = 32 << 10

func newStreamFilter(rc io.ReadCloser, m *matcher, replace bool) *streamFilter {
	return &streamFilter{src: rc, closer: rc, m: m, replace: replace}
}

func (s *streamFilter) Read(p []byte) (int, error) {
	for {
		if s.outOff < len(s.out) {
			n := copy(p, s.out[s.outOff:])
			s.outOff += n
			return n, nil
		}
		s.out, s.outOff = s.out[:0], 0
		if s.err != nil {
			return 0, s.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		if s.buf == nil {
			s.buf = make([]byte, filterChunk)
		}
		n, err := s.src.Read(s.buf)
		s.pending = append(s.pending, s.buf[:n]...)
		final := err != nil
		if merr := s.process(final); merr != nil {
			s.err = merr
			s.pending = nil
			s.out = s.out[:0]
			continue
		}
		if err == io.EOF && s.atEOF != nil {
			if eerr := s.atEOF(); eerr != nil {
				s.out = s.out[:0]
				err = eerr
			}
		}
		if err != nil {
			s.err = err
		}
	}
}

// process moves what can no longer be part of a match from pending to out.
func (s *streamFilter) process(final bool) error {
	if s.m == nil {
		s.out = append(s.out, s.pending...)
		s.pending = s.pending[:0]
		return nil
	}
	if s.m.fold {
		s.lower = asciiLower(s.lower, s.pending)
	}
	limit := len(s.pending)
	if !final {
		// Only a tail that may still become a match waits for more
		// data, so an interactive stream (SSE, WebSocket) is not held.
		limit -= s.m.partial(s.pending, s.lower)
		if limit <= 0 {
			return nil
		}
	}
	last := 0
	var found *pattern
	end := s.m.scan(s.pending, s.lower, limit, func(at int, p *pattern) bool {
		if !s.replace {
			found = p
			return false
		}
		s.out = append(s.out, s.pending[last:at]...)
		s.out = append(s.out, p.to...)
		last = at + len(p.from)
		return true
	})
	if found != nil {
		var err error
		if s.onMatch != nil {
			err = s.onMatch(found.name)
		}
		if err == nil {
			err = errSecretInStream
		}
		return err
	}
	cut := max(end, limit)
	s.out = append(s.out, s.pending[last:cut]...)
	s.pending = append(s.pending[:0], s.pending[cut:]...)
	return nil
}

func (s *streamFilter) Close() error {
	if s.closer == nil {
		return nil
	}
	return s.closer.Close()
}

// rwFilter is a filtered upgraded connection (WebSocket): reads come
// through the filter, writes go straight to the upstream.
type rwFilter struct {
	*streamFilter
	w io.Writer
}

func (r *rwFilter) Write(p []byte) (int, error) { return r.w.Write(p) }
