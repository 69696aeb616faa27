package policy

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// Decisions in AuditRecord.Decision.
const (
	Allowed = "allowed"
	Denied  = "denied"
	// Suppressed marks the summary of records left out past
	// Limits.AuditLinesPerSecond; its reason says how many.
	Suppressed = "suppressed"
)

// AuditRecord is one egress decision, written as one JSON line to
// Config.AuditLog. Secrets (real values and placeholders) are redacted from
// every field.
type AuditRecord struct {
	Time      time.Time `json:"time"`
	Container string    `json:"container,omitempty"`
	// Protocol is dns, http, https, tls, tcp or udp.
	Protocol string `json:"protocol"`
	Host     string `json:"host,omitempty"`
	Port     uint16 `json:"port,omitempty"`
	// Method is the HTTP method, or the query type for dns.
	Method string `json:"method,omitempty"`
	// Path is the request path without its query.
	Path     string `json:"path,omitempty"`
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
	// Dest is the address the guest connected to.
	Dest string `json:"dest,omitempty"`
}

func (r AuditRecord) allow(reason string) AuditRecord {
	r.Decision, r.Reason = Allowed, reason
	return r
}

func (r AuditRecord) deny(reason string) AuditRecord {
	r.Decision, r.Reason = Denied, reason
	return r
}

// maxAuditField bounds each free-text field of a record (a request path
// can be as long as the header limit), so that one line stays small.
const maxAuditField = 512

func truncateField(s string) string {
	if len(s) <= maxAuditField {
		return s
	}
	return strings.ToValidUTF8(s[:maxAuditField], "") + "…"
}

// auditor writes a network's audit records and log lines, with secrets
// redacted, and holds the records to Limits.AuditLinesPerSecond.
type auditor struct {
	container string
	w         io.Writer
	logger    *slog.Logger
	secrets   *secretSet
	perSecond int

	// mu guards the writer and the rate limit.
	mu               sync.Mutex
	rate             tokenBucket
	suppressed       int
	suppressedDenied int
	flush            *time.Timer
}

// newAuditor writes to a defaulted Config's AuditLog and Logger.
func newAuditor(cfg *Config, secrets *secretSet) auditor {
	return auditor{
		container: cfg.Container,
		w:         cfg.AuditLog,
		logger:    cfg.Logger,
		secrets:   secrets,
		perSecond: cfg.Limits.AuditLinesPerSecond,
		rate:      newTokenBucket(cfg.Limits.AuditLinesPerSecond),
	}
}

// audit writes one record, unless the container's records are past
// Limits.AuditLinesPerSecond: then it is counted, and one summary record
// says how many were left out. It never blocks a flow on a failing writer
// for longer than the write takes.
func (a *auditor) audit(r AuditRecord) {
	r.Time = time.Now().UTC()
	r.Container = a.container
	r.Host = truncateField(a.secrets.redact(r.Host))
	r.Path = truncateField(a.secrets.redact(r.Path))
	r.Reason = truncateField(a.secrets.redact(r.Reason))
	r.Method = truncateField(a.secrets.redact(r.Method))
	r.Dest = truncateField(r.Dest)
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.rate.take(r.Time) {
		a.suppressed++
		if r.Decision == Denied {
			a.suppressedDenied++
		}
		if a.flush == nil {
			a.flush = time.AfterFunc(time.Second, a.flushSummary)
		}
		return
	}
	// A pending summary waits for its timer: at most one a second.
	a.writeLocked(r)
}

// flushSummary writes the summary of suppressed records, if any, a
// second after the first was suppressed.
func (a *auditor) flushSummary() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flush = nil
	a.writeSummaryLocked()
}

// close stops the summary timer and writes the summary still due.
func (a *auditor) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.flush != nil {
		a.flush.Stop()
		a.flush = nil
	}
	a.writeSummaryLocked()
}

// writeSummaryLocked writes one record for the records left out since the
// last summary. It costs no token: the summary is what keeps a flood
// visible, and only the timer (once a second) and Close write one.
func (a *auditor) writeSummaryLocked() {
	if a.suppressed == 0 {
		return
	}
	a.writeLocked(AuditRecord{
		Time:      time.Now().UTC(),
		Container: a.container,
		Protocol:  "audit",
		Decision:  Suppressed,
		Reason: fmt.Sprintf("%d more records suppressed (%d of them denials) past limits.audit_lines_per_second = %d",
			a.suppressed, a.suppressedDenied, a.perSecond),
	})
	a.suppressed, a.suppressedDenied = 0, 0
}

func (a *auditor) writeLocked(r AuditRecord) {
	b, err := json.Marshal(r)
	if err != nil {
		return
	}
	b = append(b, '\n')
	if _, err := a.w.Write(b); err != nil {
		a.logWarn("audit log write failed", "error", err)
	}
}

// tokenBucket allows rate events a second, in bursts of up to one
// second's worth.
type tokenBucket struct {
	rate   float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate int) tokenBucket {
	return tokenBucket{rate: float64(rate), tokens: float64(rate)}
}

func (b *tokenBucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.rate, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// AuditFile is a container's audit file, kept under a size: once the live
// file reaches half of maxBytes it is renamed to path.1 (replacing the one
// before) and a new one started, so the two together stay under maxBytes
// (plus one record) and the newest records are always kept.
type AuditFile struct {
	mu   sync.Mutex
	path string
	half int64
	f    *os.File
	size int64
}

// OpenAuditFile opens path for appending under the size cap maxBytes.
// The directory must be the host's own (not writable by a guest): the file
// is renamed by path.
func OpenAuditFile(path string, maxBytes int64) (*AuditFile, error) {
	a := &AuditFile{path: path, half: max(maxBytes/2, 1)}
	if err := a.open(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *AuditFile) open() error {
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open audit file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat audit file: %w", err)
	}
	a.f, a.size = f, st.Size()
	return nil
}

// Write appends p (one record), rotating first if p would take the live
// file past its half of the cap.
func (a *AuditFile) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return 0, os.ErrClosed
	}
	if a.size > 0 && a.size+int64(len(p)) > a.half {
		if err := a.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := a.f.Write(p)
	a.size += int64(n)
	return n, err
}

func (a *AuditFile) rotate() error {
	if err := a.f.Close(); err != nil {
		a.f = nil
		return fmt.Errorf("close audit file: %w", err)
	}
	a.f = nil
	if err := os.Rename(a.path, a.path+".1"); err != nil {
		return fmt.Errorf("rotate audit file: %w", err)
	}
	return a.open()
}

// Close closes the live file.
func (a *AuditFile) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	return err
}

// logWarn and logDebug log with every string argument redacted.
func (a *auditor) logWarn(msg string, args ...any) { a.log(false, msg, args...) }
func (a *auditor) logDebug(msg string, args ...any) {
	a.log(true, msg, args...)
}

func (a *auditor) log(debug bool, msg string, args ...any) {
	for i, arg := range args {
		switch v := arg.(type) {
		case string:
			args[i] = a.secrets.redact(v)
		case error:
			args[i] = a.secrets.redact(v.Error())
		}
	}
	if debug {
		a.logger.Debug(a.secrets.redact(msg), args...)
	} else {
		a.logger.Warn(a.secrets.redact(msg), args...)
	}
}

// redactWriter redacts what the HTTP server logs before it reaches Logger.
type redactWriter struct{ a *auditor }

func (w redactWriter) Write(p []byte) (int, error) {
	w.a.logDebug("http: " + string(p))
	return len(p), nil
}
