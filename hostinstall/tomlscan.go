package hostinstall

import (
	"fmt"
	"strings"
)

// The TOML edits are made on the text, not by decoding and encoding the
// document: an encoder would drop every comment and reorder the file, and
// containerd configs are commented by hand. This scanner finds only what
// the edits need (the top-level keys before the first table header, and
// the elements of an array); every edit is then checked by decoding the
// result (see verifyTOML), so a scanner mistake fails the edit instead of
// writing a broken config.

// span is a byte range [start, end) of a document.
type span struct{ start, end int }

// topKey is a key/value line before the first table header.
type topKey struct {
	// name is the key, unquoted, its parts joined with ".".
	name string
	// line is the whole line, from its first byte to just after its
	// newline (or the end of the document), comment included.
	line span
	// value is the value's text.
	value span
}

// tomlTop is the top level of a TOML document.
type tomlTop struct {
	keys []topKey
	// headerAt is where the first table header's line starts, or
	// len(doc) when there is none.
	headerAt int
}

func (t tomlTop) key(name string) (topKey, bool) {
	for _, k := range t.keys {
		if k.name == name {
			return k, true
		}
	}
	return topKey{}, false
}

type tomlScanner struct {
	doc []byte
	i   int
}

func (s *tomlScanner) errorf(format string, args ...any) error {
	line := 1 + strings.Count(string(s.doc[:min(s.i, len(s.doc))]), "\n")
	return fmt.Errorf("line %d: %s", line, fmt.Sprintf(format, args...))
}

func (s *tomlScanner) at(prefix string) bool {
	return strings.HasPrefix(string(s.doc[s.i:]), prefix)
}

// skipBlank skips spaces and tabs.
func (s *tomlScanner) skipBlank() {
	for s.i < len(s.doc) && (s.doc[s.i] == ' ' || s.doc[s.i] == '\t') {
		s.i++
	}
}

// skipComment skips a comment up to (not including) its newline.
func (s *tomlScanner) skipComment() {
	if s.i < len(s.doc) && s.doc[s.i] == '#' {
		for s.i < len(s.doc) && s.doc[s.i] != '\n' {
			s.i++
		}
	}
}

// skipNewline skips one newline (LF or CRLF) and reports whether there
// was one.
func (s *tomlScanner) skipNewline() bool {
	switch {
	case s.at("\n"):
		s.i++
	case s.at("\r\n"):
		s.i += 2
	default:
		return false
	}
	return true
}

// skipSpace skips blanks, newlines and comments, as allowed inside arrays.
func (s *tomlScanner) skipSpace() {
	for {
		s.skipBlank()
		s.skipComment()
		if !s.skipNewline() {
			return
		}
	}
}

// scanTop scans the top-level key/value lines of doc.
func scanTop(doc []byte) (tomlTop, error) {
	s := &tomlScanner{doc: doc}
	var top tomlTop
	for s.i < len(doc) {
		lineStart := s.i
		s.skipBlank()
		s.skipComment()
		if s.i >= len(doc) || s.skipNewline() {
			continue
		}
		if doc[s.i] == '[' {
			top.headerAt = lineStart
			return top, nil
		}
		name, err := s.key()
		if err != nil {
			return tomlTop{}, err
		}
		s.skipBlank()
		if !s.at("=") {
			return tomlTop{}, s.errorf("expected = after key %q", name)
		}
		s.i++
		s.skipBlank()
		vStart := s.i
		if err := s.value(); err != nil {
			return tomlTop{}, err
		}
		vEnd := s.i
		s.skipBlank()
		s.skipComment()
		if s.i < len(doc) && !s.skipNewline() {
			return tomlTop{}, s.errorf("expected the end of the line after the value of %q", name)
		}
		top.keys = append(top.keys, topKey{name: name, line: span{lineStart, s.i}, value: span{vStart, vEnd}})
	}
	top.headerAt = len(doc)
	return top, nil
}

// key scans a bare, quoted or dotted key.
func (s *tomlScanner) key() (string, error) {
	var parts []string
	for {
		s.skipBlank()
		if s.i >= len(s.doc) {
			return "", s.errorf("expected a key")
		}
		switch c := s.doc[s.i]; {
		case c == '"' || c == '\'':
			start := s.i
			if err := s.value(); err != nil {
				return "", err
			}
			parts = append(parts, unquoteKey(string(s.doc[start:s.i])))
		case isBareKeyChar(c):
			start := s.i
			for s.i < len(s.doc) && isBareKeyChar(s.doc[s.i]) {
				s.i++
			}
			parts = append(parts, string(s.doc[start:s.i]))
		default:
			return "", s.errorf("unexpected %q where a key was expected", c)
		}
		s.skipBlank()
		if !s.at(".") {
			return strings.Join(parts, "."), nil
		}
		s.i++
	}
}

func isBareKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// unquoteKey is good enough for comparing keys: a quoted key with escapes
// never names one of the keys the edits look for.
func unquoteKey(q string) string {
	return q[1 : len(q)-1]
}

// value scans one value of any type.
func (s *tomlScanner) value() error {
	if s.i >= len(s.doc) {
		return s.errorf("expected a value")
	}
	switch {
	case s.at(`"""`):
		return s.multiline(`"""`, true)
	case s.at(`'''`):
		return s.multiline(`'''`, false)
	case s.at(`"`):
		s.i++
		for s.i < len(s.doc) {
			switch s.doc[s.i] {
			case '\\':
				s.i += 2
				continue
			case '"':
				s.i++
				return nil
			case '\n':
				return s.errorf("unterminated string")
			}
			s.i++
		}
		return s.errorf("unterminated string")
	case s.at(`'`):
		s.i++
		for s.i < len(s.doc) {
			switch s.doc[s.i] {
			case '\'':
				s.i++
				return nil
			case '\n':
				return s.errorf("unterminated string")
			}
			s.i++
		}
		return s.errorf("unterminated string")
	case s.at("["):
		_, err := s.array()
		return err
	case s.at("{"):
		return s.inlineTable()
	}
	start := s.i
	for s.i < len(s.doc) && !strings.ContainsRune(" \t\r\n,]}#", rune(s.doc[s.i])) {
		s.i++
	}
	if s.i == start {
		return s.errorf("expected a value")
	}
	return nil
}

func (s *tomlScanner) multiline(delim string, escapes bool) error {
	s.i += len(delim)
	for s.i < len(s.doc) {
		if escapes && s.doc[s.i] == '\\' {
			s.i += 2
			continue
		}
		if s.at(delim) {
			s.i += len(delim)
			// Up to two quotes may end the content right before the
			// delimiter ("""a"""" is a string ending in a quote).
			for n := 0; n < 2 && s.i < len(s.doc) && s.doc[s.i] == delim[0]; n++ {
				s.i++
			}
			return nil
		}
		s.i++
	}
	return s.errorf("unterminated multi-line string")
}

// array scans an array at s.i and returns its elements' spans.
func (s *tomlScanner) array() ([]span, error) {
	s.i++ // [
	var elems []span
	for {
		s.skipSpace()
		if s.i >= len(s.doc) {
			return nil, s.errorf("unterminated array")
		}
		switch s.doc[s.i] {
		case ']':
			s.i++
			return elems, nil
		case ',':
			if len(elems) == 0 {
				return nil, s.errorf("unexpected , in an array")
			}
			s.i++
			continue
		}
		start := s.i
		if err := s.value(); err != nil {
			return nil, err
		}
		elems = append(elems, span{start, s.i})
	}
}

func (s *tomlScanner) inlineTable() error {
	s.i++ // {
	for {
		s.skipSpace()
		if s.i >= len(s.doc) {
			return s.errorf("unterminated inline table")
		}
		switch s.doc[s.i] {
		case '}':
			s.i++
			return nil
		case ',':
			s.i++
			continue
		}
		if _, err := s.key(); err != nil {
			return err
		}
		s.skipBlank()
		if !s.at("=") {
			return s.errorf("expected = in an inline table")
		}
		s.i++
		s.skipBlank()
		if err := s.value(); err != nil {
			return err
		}
	}
}

// arrayElements returns the elements of the array whose text starts at
// doc[at].
func arrayElements(doc []byte, at int) ([]span, error) {
	s := &tomlScanner{doc: doc, i: at}
	if !s.at("[") {
		return nil, s.errorf("not an array")
	}
	return s.array()
}

// tomlString writes s as a TOML string.
func tomlString(s string) (string, error) {
	clean := func(quote rune) bool {
		for _, r := range s {
			if r < 0x20 || r == 0x7f || r == quote || r == '\\' && quote == '"' {
				return false
			}
		}
		return true
	}
	switch {
	case clean('"'):
		return `"` + s + `"`, nil
	case clean('\''):
		return `'` + s + `'`, nil
	}
	return "", fmt.Errorf("%q cannot be written as a TOML string here: it holds control characters or both kinds of quote", s)
}
