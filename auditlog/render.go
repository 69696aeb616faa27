package auditlog

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Writer renders entries.
type Writer interface {
	// Measure sees an entry before it is written (a first pass over the
	// records), so that the columns fit; writers that need no widths
	// ignore it.
	Measure(Entry)
	Write(Entry) error
	Flush() error
}

// JSONWriter writes each record's line as the shim wrote it.
type JSONWriter struct{ w *bufio.Writer }

// NewJSONWriter writes JSON lines to w.
func NewJSONWriter(w io.Writer) *JSONWriter { return &JSONWriter{w: bufio.NewWriter(w)} }

// Measure does nothing: JSON lines have no columns.
func (j *JSONWriter) Measure(Entry) {}

func (j *JSONWriter) Write(e Entry) error {
	j.w.Write(e.Raw)
	return j.w.WriteByte('\n')
}

func (j *JSONWriter) Flush() error { return j.w.Flush() }

// TimeFormat is the table's time: UTC, as the records hold it, to the
// millisecond.
const TimeFormat = "2006-01-02T15:04:05.000Z"

// column is a table column: its header, the widest a cell may make it,
// the width it starts with when records are followed (which come after
// the widths were set: room for common cells keeps them aligned), and
// its cell of an entry.
type column struct {
	header string
	max    int
	follow int
	cell   func(Entry) string
}

var (
	colTime      = column{"TIME", len(TimeFormat), 0, func(e Entry) string { return e.Time.UTC().Format(TimeFormat) }}
	colContainer = column{"CONTAINER", 64, 30, func(e Entry) string { return e.Namespace + "/" + shortID(e.Container) }}
	colDecision  = column{"DECISION", 10, len(Suppressed), func(e Entry) string { return e.Decision }}
	colProto     = column{"PROTO", 6, 5, func(e Entry) string { return e.Protocol }}
	colHost      = column{"HOST", 48, 30, hostCell}
	colMethod    = column{"METHOD", 8, 7, func(e Entry) string { return e.Method }}
	colPath      = column{"PATH", 48, 24, func(e Entry) string { return e.Path }}
	// The record's reason is the rule that decided (for a denial, also
	// what would allow it); it is last, and never cut.
	colRule = column{"RULE", 0, 0, func(e Entry) string { return e.Reason }}
)

func hostCell(e Entry) string {
	host := e.Host
	if host == "" {
		return e.Dest
	}
	if e.Port != 0 {
		return net.JoinHostPort(host, strconv.Itoa(int(e.Port)))
	}
	return host
}

// shortID shows a Docker or Kubernetes container ID (64 hex digits) as
// docker ps does, by its first 12; other IDs, chosen by people, whole.
func shortID(id string) string {
	if len(id) != 64 {
		return id
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return id
		}
	}
	return id[:12]
}

// TableWriter writes aligned columns. The widths come from Measure (a
// first pass) and grow, up to each column's maximum, when a later cell
// is wider; a cell past the maximum is cut with "…" (--json shows it
// whole).
type TableWriter struct {
	w       *bufio.Writer
	cols    []column
	widths  []int
	started bool
}

// NewTableWriter writes a table; withContainer adds the CONTAINER column,
// for records of several containers.
func NewTableWriter(w io.Writer, withContainer bool) *TableWriter {
	cols := []column{colTime}
	if withContainer {
		cols = append(cols, colContainer)
	}
	cols = append(cols, colDecision, colProto, colHost, colMethod, colPath, colRule)
	t := &TableWriter{w: bufio.NewWriter(w), cols: cols, widths: make([]int, len(cols))}
	for i, c := range cols {
		t.widths[i] = len(c.header)
	}
	return t
}

func (t *TableWriter) Measure(e Entry) {
	for i, c := range t.cols[:len(t.cols)-1] {
		t.widths[i] = max(t.widths[i], min(utf8.RuneCountInString(safe(c.cell(e))), c.max))
	}
}

// roomForFollow widens the columns to their follow widths.
func (t *TableWriter) roomForFollow() {
	for i, c := range t.cols {
		t.widths[i] = max(t.widths[i], c.follow)
	}
}

// Header writes the header line, once (Write does it too); a table
// without records still says what it would show.
func (t *TableWriter) Header() error {
	if t.started {
		return nil
	}
	t.started = true
	headers := make([]string, len(t.cols))
	for i, c := range t.cols {
		headers[i] = c.header
	}
	return t.line(headers)
}

func (t *TableWriter) Write(e Entry) error {
	if err := t.Header(); err != nil {
		return err
	}
	t.Measure(e)
	cells := make([]string, len(t.cols))
	for i, c := range t.cols {
		cells[i] = safe(c.cell(e))
		if cells[i] == "" {
			cells[i] = "-"
		}
		if c.max > 0 && utf8.RuneCountInString(cells[i]) > c.max {
			cells[i] = string([]rune(cells[i])[:c.max-1]) + "…"
		}
	}
	return t.line(cells)
}

func (t *TableWriter) line(cells []string) error {
	for i, cell := range cells {
		if i == len(cells)-1 {
			t.w.WriteString(cell)
			break
		}
		t.w.WriteString(cell)
		t.w.WriteString(strings.Repeat(" ", t.widths[i]-utf8.RuneCountInString(cell)+2))
	}
	return t.w.WriteByte('\n')
}

func (t *TableWriter) Flush() error { return t.w.Flush() }

// safe escapes what a terminal would act on: the host, path and method
// come from the guest, and a request line must not be able to move the
// cursor, recolour the screen or reorder text (bidi controls) in the
// operator's terminal.
func safe(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i, w := 0, 0; i < len(s); i += w {
		r, n := utf8.DecodeRuneInString(s[i:])
		w = n
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !unicode.IsPrint(r) && r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		case !unicode.IsPrint(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
