package hostcheck

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// WriteText writes one line per item, then the verdict.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, it := range r.Items {
		fmt.Fprintf(&b, "%-4s  %-11s %s\n", it.Status, it.Name, it.Summary)
	}
	if r.CanRun {
		b.WriteString("\nThis host can run gondolin containers.\n")
	} else {
		fmt.Fprintf(&b, "\nThis host cannot run gondolin containers: fix %s.\n", strings.Join(r.Failed(), ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one indented JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}
