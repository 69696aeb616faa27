package policyquery

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// WriteText writes the report as a few lines: the decision and its rule
// and hint first, then the policy, each step and each secret.
func (rep *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	line := func(label, text string) {
		fmt.Fprintf(&b, "%-9s %s\n", label, text)
	}
	target := rep.Target
	if rep.Method != "" {
		target = rep.Method + " " + target
	}
	line(rep.Decision, target)
	line("rule", rep.Reason)
	if rep.Hint != "" {
		line("hint", rep.Hint)
	}
	line("policy", rep.Policy.text())
	for _, s := range rep.Steps {
		verdict := "denied"
		if s.Allowed {
			verdict = "allowed"
		}
		text := verdict + ": " + s.Reason
		if s.Detail != "" {
			text += " — " + s.Detail
		}
		line(s.Name, text)
		if s.Hint != "" && s.Hint != rep.Hint {
			line("", "hint: "+s.Hint)
		}
	}
	for _, s := range rep.Secrets {
		text := s.Name + " → " + strings.Join(s.Hosts, ",") + ": " + s.Outcome + ": " + s.Reason
		line("secret", text)
		if s.Hint != "" {
			line("", "hint: "+s.Hint)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (ps PolicySummary) text() string {
	parts := []string{"mode " + ps.Mode, "dns " + ps.DNS}
	if len(ps.Policies) > 0 {
		parts = append(parts, "named "+strings.Join(ps.Policies, ","))
	}
	list := func(name string, l []string) {
		if len(l) > 0 {
			parts = append(parts, name+" "+strings.Join(l, ","))
		}
	}
	list("allow", ps.Allow)
	list("allow-internal", ps.AllowInternal)
	list("tcp-allow", ps.TCPAllow)
	return strings.Join(parts, "; ")
}

// WriteJSON writes the report as one indented JSON object.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(rep)
}
