// Package kernel holds the configuration of gondolin's minimal guest kernel:
// a fragment merged over `make tinyconfig` of Debian's linux-source package.
// gondolin-mkimage builds it (see package imagebuild, MinimalKernel).
package kernel

import _ "embed"

// Fragment is gondolin.config: the symbols set over tinyconfig.
//
//go:embed gondolin.config
var Fragment []byte
