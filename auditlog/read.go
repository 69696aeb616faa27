package auditlog

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// maxLine bounds one line: the shim cuts each free-text field at 512
// bytes, so a record is a few KiB at most, and a longer line is not one.
const maxLine = 64 << 10

// lineReader reads the complete lines of a file that may still grow: a
// line whose newline is not written yet waits for it, and a line longer
// than maxLine is skipped and reported.
type lineReader struct {
	path string
	f    *os.File
	r    *bufio.Reader
	// pending is the start of a line whose newline is not read yet.
	pending []byte
	// skipping is set inside an over-long line.
	skipping bool
	// lines counts the newlines read.
	lines int
}

// openLines opens path; a file that does not exist is (nil, nil).
func openLines(path string) (*lineReader, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &lineReader{path: path, f: f, r: bufio.NewReaderSize(f, maxLine)}, nil
}

func (l *lineReader) close() {
	if l != nil {
		l.f.Close()
	}
}

// next returns the next complete line without its newline (valid until
// the next call), or nil at the file's current end. A non-nil Problem
// reports a line it skipped; call again for the next.
func (l *lineReader) next() ([]byte, *Problem, error) {
	for {
		chunk, err := l.r.ReadSlice('\n')
		switch {
		case err == nil:
			l.lines++
			if l.skipping {
				l.skipping = false
				continue
			}
			line := chunk[:len(chunk)-1]
			if len(l.pending) > 0 {
				if len(l.pending)+len(line) > maxLine {
					l.pending = l.pending[:0]
					return nil, l.tooLong(l.lines), nil
				}
				l.pending = append(l.pending, line...)
				line = l.pending
				l.pending = l.pending[:0]
			}
			return line, nil, nil
		case errors.Is(err, bufio.ErrBufferFull), errors.Is(err, io.EOF):
			if l.skipping {
				if errors.Is(err, io.EOF) {
					return nil, nil, nil
				}
				continue
			}
			if len(l.pending)+len(chunk) > maxLine {
				l.pending, l.skipping = l.pending[:0], true
				return nil, l.tooLong(l.lines + 1), nil
			}
			l.pending = append(l.pending, chunk...)
			if errors.Is(err, io.EOF) {
				return nil, nil, nil
			}
		default:
			return nil, nil, fmt.Errorf("read %s: %w", l.path, err)
		}
	}
}

func (l *lineReader) tooLong(line int) *Problem {
	return &Problem{Path: l.path, Line: line, Err: fmt.Errorf("longer than %d KiB: not an audit record, skipped", maxLine>>10)}
}

// unfinished reports the line after the last newline, if any: at the end
// of a file no longer written, a record cut short.
func (l *lineReader) unfinished() *Problem {
	if l == nil || len(l.pending) == 0 && !l.skipping {
		return nil
	}
	l.pending, l.skipping = l.pending[:0], false
	return &Problem{Path: l.path, Line: l.lines + 1, Err: errors.New("the last line has no newline: a record cut short (or being written), not shown")}
}

// sourceReader reads one container's records: the rotated file, then the
// live one, whose reader it keeps at the end for following.
type sourceReader struct {
	src     Source
	filter  Filter
	report  func(Problem)
	rotated *lineReader
	live    *lineReader
	// liveInfo identifies the file live reads, to notice a rotation.
	liveInfo os.FileInfo
}

// openSource opens the live file before the rotated one: a rotation in
// between then leaves both naming the same file, read once, instead of
// losing the records of the file rotated away.
func openSource(src Source, filter Filter, report func(Problem)) (*sourceReader, error) {
	s := &sourceReader{src: src, filter: filter, report: report}
	var err error
	if s.live, err = openLines(src.Live); err != nil {
		return nil, err
	}
	if s.live != nil {
		if s.liveInfo, err = s.live.f.Stat(); err != nil {
			s.live.close()
			return nil, err
		}
	}
	if s.rotated, err = openLines(src.rotated()); err != nil {
		s.live.close()
		return nil, err
	}
	if s.rotated != nil && s.live != nil {
		if st, err := s.rotated.f.Stat(); err == nil && os.SameFile(st, s.liveInfo) {
			s.rotated.close()
			s.rotated = nil
		}
	}
	return s, nil
}

func (s *sourceReader) close() {
	s.rotated.close()
	s.live.close()
}

// next returns the next record the filter keeps, or false at the live
// file's current end.
func (s *sourceReader) next() (Entry, bool, error) {
	for {
		l := s.rotated
		if l == nil {
			l = s.live
		}
		if l == nil {
			return Entry{}, false, nil
		}
		line, prob, err := l.next()
		if err != nil {
			return Entry{}, false, err
		}
		if prob != nil {
			s.report(*prob)
			continue
		}
		if line == nil {
			if l == s.live {
				return Entry{}, false, nil
			}
			// The rotated file is complete: on to the live one.
			if p := l.unfinished(); p != nil {
				s.report(*p)
			}
			s.rotated.close()
			s.rotated = nil
			continue
		}
		r, err := decodeRecord(line)
		if err != nil {
			s.report(Problem{Path: l.path, Line: l.lines, Err: err})
			continue
		}
		if !s.filter.Match(r) {
			continue
		}
		return Entry{Record: r, Namespace: s.src.Namespace, Container: s.src.Container, Raw: line}, true, nil
	}
}

// finish reports a last line without a newline (for a read that does not
// follow).
func (s *sourceReader) finish() {
	if p := s.live.unfinished(); p != nil {
		s.report(*p)
	}
}

// rotate notices that the live file was rotated away (renamed to .1 and a
// new one started), or created: the caller has read the old one to its
// end; the new one is read from its start.
func (s *sourceReader) rotate() (bool, error) {
	st, err := os.Stat(s.src.Live)
	if errors.Is(err, fs.ErrNotExist) {
		// Between the rotation's rename and the new file, or the
		// container's files were removed: keep what is open.
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if s.live != nil && os.SameFile(st, s.liveInfo) {
		return false, nil
	}
	if s.live != nil {
		if p := s.live.unfinished(); p != nil {
			s.report(*p)
		}
		s.live.close()
	}
	if s.live, err = openLines(s.src.Live); err != nil || s.live == nil {
		return false, err
	}
	if s.liveInfo, err = s.live.f.Stat(); err != nil {
		return false, err
	}
	return true, nil
}
