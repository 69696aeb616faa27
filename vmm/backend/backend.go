// Package backend picks a VMM backend by name. It is the one package that
// imports the backends: the runtime asks it for one and then uses only
// package vmm, so a second VMM changes nothing outside vmm/.
package backend

import (
	"fmt"

	"github.com/earendil-works/gondolin-containerd/vmm"
	"github.com/earendil-works/gondolin-containerd/vmm/qemu"
)

// Kind names a VMM.
type Kind string

// QEMU is the only backend so far.
const QEMU Kind = "qemu"

// New returns the backend of kind whose executable is binary ("" for the
// backend's default).
func New(kind Kind, binary string) (vmm.Backend, error) {
	switch kind {
	case QEMU:
		return qemu.Backend{QEMU: binary}, nil
	default:
		return nil, fmt.Errorf("unknown VMM %q (known: %s)", kind, QEMU)
	}
}
