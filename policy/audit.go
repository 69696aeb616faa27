package policy

import (
	"encoding/json"
	"time"
)

// Decisions in AuditRecord.Decision.
const (
	Allowed = "allowed"
	Denied  = "denied"
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

// audit writes one record. It never blocks a flow on a failing writer for
// longer than the write takes.
func (n *Network) audit(r AuditRecord) {
	r.Time = time.Now().UTC()
	r.Container = n.cfg.Container
	r.Host = n.secrets.redact(r.Host)
	r.Path = n.secrets.redact(r.Path)
	r.Reason = n.secrets.redact(r.Reason)
	r.Method = n.secrets.redact(r.Method)
	b, err := json.Marshal(r)
	if err != nil {
		return
	}
	b = append(b, '\n')
	n.auditMu.Lock()
	defer n.auditMu.Unlock()
	if _, err := n.cfg.AuditLog.Write(b); err != nil {
		n.logWarn("audit log write failed", "error", err)
	}
}

// logWarn and logDebug log with every string argument redacted.
func (n *Network) logWarn(msg string, args ...any) { n.log(false, msg, args...) }
func (n *Network) logDebug(msg string, args ...any) {
	n.log(true, msg, args...)
}

func (n *Network) log(debug bool, msg string, args ...any) {
	for i, a := range args {
		switch v := a.(type) {
		case string:
			args[i] = n.secrets.redact(v)
		case error:
			args[i] = n.secrets.redact(v.Error())
		}
	}
	if debug {
		n.cfg.Logger.Debug(n.secrets.redact(msg), args...)
	} else {
		n.cfg.Logger.Warn(n.secrets.redact(msg), args...)
	}
}

// redactWriter redacts what the HTTP server logs before it reaches Logger.
type redactWriter struct{ n *Network }

func (w redactWriter) Write(p []byte) (int, error) {
	w.n.logDebug("http: " + string(p))
	return len(p), nil
}
