// Package kernel holds the recipe of gondolin's minimal guest kernel: a
// config fragment merged over `make tinyconfig` of Debian's linux-source
// package, and the patches applied to that source first. gondolin-mkimage
// builds it (see package imagebuild, MinimalKernel).
package kernel

import (
	"embed"
	"io/fs"
	"sort"
)

// Fragment is gondolin.config: the symbols set over tinyconfig.
//
//go:embed gondolin.config
var Fragment []byte

//go:embed patches/*.patch
var patchFiles embed.FS

// Patch is one source patch, applied with `patch -p1` in the kernel tree.
type Patch struct {
	Name string // file name, e.g. 0001-virtio_mmio-max_queue_size.patch
	Data []byte
}

// Patches returns the patches in patches/, in the order they apply (by
// name).
func Patches() []Patch {
	names, err := fs.Glob(patchFiles, "patches/*.patch")
	if err != nil {
		panic(err) // the pattern is constant and valid
	}
	sort.Strings(names)
	patches := make([]Patch, 0, len(names))
	for _, n := range names {
		data, err := patchFiles.ReadFile(n)
		if err != nil {
			panic(err) // embedded at build time
		}
		patches = append(patches, Patch{Name: n[len("patches/"):], Data: data})
	}
	return patches
}
