// Package auditlog reads the egress audit files the shim writes, one per
// container at <audit_dir>/<namespace>/<container>.jsonl (with its one
// rotated predecessor, .jsonl.1), filters their records and renders them
// as a table or as JSON lines, once or following new records as they are
// written. It streams: memory does not grow with the files.
package auditlog

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/earendil-works/gondolin-containerd/policy"
)

// Decisions in Record.Decision.
const (
	Allowed = policy.Allowed
	Denied  = policy.Denied
	// Suppressed is the summary of records the shim left out past its
	// rate limit; its reason says how many, and how many were denials.
	Suppressed = policy.Suppressed
)

// Record is one line of an audit file: the policy's own record, so the
// reader and the writer cannot drift apart. --json passes lines through as
// written.
type Record = policy.AuditRecord

// Entry is a record with the file it came from.
type Entry struct {
	Record
	// Namespace and Container name the file (<namespace>/<container>.jsonl).
	Namespace, Container string
	// Raw is the line as written, without its newline.
	Raw []byte
}

func decodeRecord(line []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		return Record{}, err
	}
	if r.Time.IsZero() || r.Decision == "" {
		return Record{}, errors.New("no time or decision: not an audit record")
	}
	return r, nil
}

// Filter selects records.
type Filter struct {
	// Denied keeps denials, and the summaries of suppressed records,
	// which may count denials.
	Denied bool
}

// Match reports whether the filter keeps r.
func (f Filter) Match(r Record) bool {
	if f.Denied {
		return r.Decision == Denied || r.Decision == Suppressed
	}
	return true
}

// Problem is a line that could not be shown.
type Problem struct {
	Path string
	Line int
	Err  error
}

func (p Problem) Error() string {
	return fmt.Sprintf("%s:%d: %v", p.Path, p.Line, p.Err)
}
