package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Crictl runs crictl against the bench containerd's CRI plugin.
type Crictl struct {
	Bin      string
	Endpoint string // unix:///run/gondolin-bench/containerd.sock
}

// Command returns crictl with the given arguments, bound to ctx. No
// crictl.yaml is read (--config /dev/null): the endpoints are ours and each
// CRI call may take timeout (a pod's VM boots inside runp).
func (c *Crictl) Command(ctx context.Context, timeout time.Duration, args ...string) *exec.Cmd {
	full := append([]string{"--config", os.DevNull, "--runtime-endpoint", c.Endpoint, "--image-endpoint", c.Endpoint,
		"--timeout", timeout.String()}, args...)
	cmd := exec.CommandContext(ctx, c.Bin, full...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Output runs crictl and returns its standard output, trimmed; a failure
// carries the tail of its error output.
func (c *Crictl) Output(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := c.Command(ctx, timeout, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), cmdError("crictl "+args[0], err, ctx, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// criWant is what a CRI runtime handler must run to be the same runtime as
// a Runtime's ctr flags.
type criWant struct {
	// Shim is the runtime type (io.containerd.gondolin.v1) or the shim's
	// absolute path (ctr --runtime).
	Shim string
	// BinaryName is the runc shim's OCI runtime binary (ctr --runc-binary).
	BinaryName string
	// ConfigPath is the runtime config handed to the shim (ctr
	// --runtime-config-path).
	ConfigPath string
}

// criWantFromRunFlags reads what a runtime's `ctr run` flags select. Any
// other flag is an error: the CRI handler could not be checked against it.
func criWantFromRunFlags(flags []string) (criWant, error) {
	var w criWant
	for i := 0; i < len(flags); i++ {
		var dst *string
		switch flags[i] {
		case "--runtime":
			dst = &w.Shim
		case "--runc-binary":
			dst = &w.BinaryName
		case "--runtime-config-path":
			dst = &w.ConfigPath
		default:
			return criWant{}, fmt.Errorf("ctr flag %q has no CRI counterpart the bench knows (--runtime, --runc-binary, --runtime-config-path)", flags[i])
		}
		if i+1 >= len(flags) {
			return criWant{}, fmt.Errorf("ctr flag %s lacks its value", flags[i])
		}
		i++
		*dst = flags[i]
	}
	if w.Shim == "" {
		return criWant{}, fmt.Errorf("ctr flags %q name no --runtime", flags)
	}
	return w, nil
}

// criRuntime is one runtime handler of CRI's config as `crictl info`
// prints it (config.containerd.runtimes.NAME).
type criRuntime struct {
	RuntimeType string         `json:"runtimeType"`
	RuntimePath string         `json:"runtimePath"`
	Options     map[string]any `json:"options"`
}

// criRuntimes returns the runtime handlers in a `crictl info` document.
func criRuntimes(info []byte) (map[string]criRuntime, error) {
	var doc struct {
		Config struct {
			Containerd struct {
				Runtimes map[string]criRuntime `json:"runtimes"`
			} `json:"containerd"`
		} `json:"config"`
	}
	if err := json.Unmarshal(info, &doc); err != nil {
		return nil, fmt.Errorf("crictl info: %w", err)
	}
	if doc.Config.Containerd.Runtimes == nil {
		return nil, fmt.Errorf("crictl info has no config.containerd.runtimes")
	}
	return doc.Config.Containerd.Runtimes, nil
}

// checkCRIHandler says whether CRI's handler h runs what want names: the
// same shim (by runtime type, or by absolute path as runtime_path or
// runtime_type), the same runc binary and the same runtime config.
func checkCRIHandler(handlers map[string]criRuntime, h string, want criWant) error {
	got, ok := handlers[h]
	if !ok {
		return fmt.Errorf("the bench containerd has no CRI runtime handler %q (hack/bench.sh writes them)", h)
	}
	opt := func(key string) string {
		s, _ := got.Options[key].(string)
		return s
	}
	var diffs []string
	if filepath.IsAbs(want.Shim) {
		if got.RuntimePath != want.Shim && got.RuntimeType != want.Shim {
			diffs = append(diffs, fmt.Sprintf("shim %q (runtime_type %q), want %s", got.RuntimePath, got.RuntimeType, want.Shim))
		}
	} else if got.RuntimeType != want.Shim || got.RuntimePath != "" {
		diffs = append(diffs, fmt.Sprintf("runtime_type %q runtime_path %q, want runtime_type %q", got.RuntimeType, got.RuntimePath, want.Shim))
	}
	if b := opt("BinaryName"); b != want.BinaryName {
		diffs = append(diffs, fmt.Sprintf("BinaryName %q, want %q", b, want.BinaryName))
	}
	if p := opt("ConfigPath"); p != want.ConfigPath {
		diffs = append(diffs, fmt.Sprintf("ConfigPath %q, want %q", p, want.ConfigPath))
	}
	if len(diffs) > 0 {
		return fmt.Errorf("CRI runtime handler %q does not run what ctr runs: %s (hack/bench.sh writes the handlers)", h, strings.Join(diffs, "; "))
	}
	return nil
}

// criLogLine is one line of a CRI container log: "TIMESTAMP STREAM TAG
// CONTENT", TAG F (a full line) or P (a part of a longer one).
type criLogLine struct {
	Stream  string
	Partial bool
	Content string
}

// parseCRILogLine parses one line of a CRI container log (without its
// newline).
func parseCRILogLine(l string) (criLogLine, error) {
	f := strings.SplitN(l, " ", 4)
	if len(f) < 3 {
		return criLogLine{}, fmt.Errorf("CRI log line %q: want TIMESTAMP STREAM TAG CONTENT", l)
	}
	if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil {
		return criLogLine{}, fmt.Errorf("CRI log line %q: timestamp: %w", l, err)
	}
	if f[1] != "stdout" && f[1] != "stderr" {
		return criLogLine{}, fmt.Errorf("CRI log line %q: stream %q, want stdout or stderr", l, f[1])
	}
	tag, _, _ := strings.Cut(f[2], ":") // tags may carry more after ':'
	if tag != "F" && tag != "P" {
		return criLogLine{}, fmt.Errorf("CRI log line %q: tag %q, want F or P", l, f[2])
	}
	content := ""
	if len(f) == 4 {
		content = f[3]
	}
	return criLogLine{Stream: f[1], Partial: tag == "P", Content: content}, nil
}

// firstCRILogLine returns the first complete line of output (either
// stream) in a CRI container log's text, its parts joined, and whether there
// is one yet: the text may end in a line still being written.
func firstCRILogLine(text string) (string, bool, error) {
	parts := map[string]string{}
	for {
		l, rest, ok := strings.Cut(text, "\n")
		if !ok {
			return "", false, nil // no complete log line (yet)
		}
		text = rest
		e, err := parseCRILogLine(l)
		if err != nil {
			return "", false, err
		}
		parts[e.Stream] += e.Content
		if !e.Partial {
			return parts[e.Stream], true, nil
		}
	}
}
