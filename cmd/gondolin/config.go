package main

import (
	"os"
	"path/filepath"

	"github.com/earendil-works/gondolin-containerd/config"
)

// loadConfig reads the runtime config as the shim does: path, else
// config.DefaultPath if it exists, else the defaults. The defaults look for
// the guest image and the QEMU beside the shim, which this command is
// installed next to.
func loadConfig(path string) (*config.Config, error) {
	exeDir := "."
	if self, err := os.Executable(); err == nil {
		exeDir = filepath.Dir(self)
	}
	return config.Load(path, exeDir)
}
