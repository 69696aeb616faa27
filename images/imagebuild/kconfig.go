package imagebuild

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// KernelConfig is a parsed kernel .config (/boot/config-<release>): symbol
// (with its CONFIG_ prefix) → value as written ("y", "m", "\"str\"", "123").
// Symbols written as "# CONFIG_X is not set" are recorded as "n".
type KernelConfig map[string]string

// ParseKernelConfig parses a kernel .config file.
func ParseKernelConfig(data []byte) (KernelConfig, error) {
	cfg := KernelConfig{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "#"):
			rest := strings.TrimSpace(strings.TrimPrefix(line, "#"))
			if sym, ok := strings.CutSuffix(rest, " is not set"); ok && strings.HasPrefix(sym, "CONFIG_") {
				cfg[sym] = "n"
			}
			continue
		}
		sym, val, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(sym, "CONFIG_") {
			return nil, fmt.Errorf("kernel config line %d: cannot parse %q", lineNo, line)
		}
		cfg[sym] = val
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Tristate is how a kernel config symbol is built.
type Tristate int

const (
	// NotBuilt: "is not set", absent, or any value other than y/m.
	NotBuilt Tristate = iota
	// BuiltIn: =y.
	BuiltIn
	// Module: =m.
	Module
)

func (t Tristate) String() string {
	switch t {
	case BuiltIn:
		return "built in (=y)"
	case Module:
		return "module (=m)"
	default:
		return "not built"
	}
}

// State reports whether sym (e.g. "CONFIG_VIRTIO_NET"; the CONFIG_ prefix is
// added if missing) is built in, a module, or not built at all.
func (c KernelConfig) State(sym string) Tristate {
	if !strings.HasPrefix(sym, "CONFIG_") {
		sym = "CONFIG_" + sym
	}
	switch c[sym] {
	case "y":
		return BuiltIn
	case "m":
		return Module
	default:
		return NotBuilt
	}
}
