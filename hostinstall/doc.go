// Package hostinstall registers the gondolin runtime with the host's
// containerd (its CRI plugin's runtimes, through a drop-in config file it
// imports, or an edit of its main config) and Docker (daemon.json's
// runtimes), and removes exactly that again.
//
// The edits are pure functions of the files' bytes (containerd.go,
// docker.go): they change only the text they add or remove, keep every
// comment and every other byte, and check the result by decoding it. A
// Plan is the set of changed files; Apply writes it with a backup of each
// existing file it changes, and Diff shows it without writing.
package hostinstall

const (
	// RuntimeType is the containerd runtime name of the gondolin shim.
	RuntimeType = "io.containerd.gondolin.v1"
	// RuntimeName is the name the runtime is registered under, in
	// containerd's CRI plugin and in Docker.
	RuntimeName = "gondolin"
	// ShimBinary is the shim's file name, which containerd derives from
	// RuntimeType and looks up on its PATH.
	ShimBinary = "containerd-shim-gondolin-v1"
)
