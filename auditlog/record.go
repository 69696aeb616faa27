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
	"time"
)

// Decisions in Record.Decision.
const (
	Allowed = "allowed"
	Denied  = "denied"
	// Suppressed is the summary of records the shim left out past its
	// rate limit; its reason says how many, and how many were denials.
	Suppressed = "suppressed"
)

// Record is one line of an audit file. It mirrors the shim's
// policy.AuditRecord key for key instead of importing it: the JSON lines
// are the contract (docs/annotations.md, docs/configuration.md), and this
// command does not depend on the policy package. Keys added there reach
// --json output anyway, which passes lines through as written.
type Record struct {
	Time      time.Time `json:"time"`
	Container string    `json:"container,omitempty"`
	// Protocol is dns, http, https, tls, tcp or udp (audit for a
	// suppressed summary).
	Protocol string `json:"protocol"`
	Host     string `json:"host,omitempty"`
	Port     uint16 `json:"port,omitempty"`
	// Method is the HTTP method, or the query type for dns.
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
	// Decision is Allowed, Denied or Suppressed.
	Decision string `json:"decision"`
	// Reason is the rule that decided: for an allowed request the rule
	// that allowed it, for a denial why (and, for most kinds, after "; "
	// what would allow it).
	Reason string `json:"reason"`
	// Dest is the address the guest connected to.
	Dest string `json:"dest,omitempty"`
}

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
