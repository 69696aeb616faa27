// Package backend picks a VMM backend by name. It is the one package that
// imports the backends: the runtime asks it for one and then uses only
// package vmm, so a second VMM changes nothing outside vmm/.
package backend

import (
	"fmt"
	"slices"
	"strings"

	"github.com/earendil-works/gondolin-containerd/vmm"
	"github.com/earendil-works/gondolin-containerd/vmm/qemu"
)

// Kind names a VMM.
type Kind string

// QEMU is the only backend so far.
const QEMU Kind = "qemu"

// kinds are the backends New knows.
var kinds = []Kind{QEMU}

// Known reports whether New knows kind.
func Known(kind Kind) bool { return slices.Contains(kinds, kind) }

// KindList names the known backends, for error messages.
func KindList() string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = string(k)
	}
	return strings.Join(names, ", ")
}

// New returns the backend of kind whose executable is binary ("" for the
// backend's default).
func New(kind Kind, binary string) (vmm.Backend, error) {
	switch kind {
	case QEMU:
		return qemu.Backend{QEMU: binary}, nil
	default:
		return nil, fmt.Errorf("unknown VMM %q (known: %s)", kind, KindList())
	}
}
