// Package initproc is the container process side of the agent: the agent
// re-executes itself as "gondolin-agent init" in the container's new PID,
// UTS and IPC namespaces and cgroup (or, for an exec process, in those of
// the container init); that child reads its Config from fd 3, prepares the
// process (a mount namespace of its own with the container root
// pivot_root'ed in, or for an exec the init's; namespace-bound mounts,
// sysctls, masked and read-only paths, rlimits, cwd, umask, capabilities,
// user, PATH lookup, no_new_privs), reports ready, and waits for the start
// byte before it execs the container's program, the way runc create/start
// works.
package initproc

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
)

// Arg is the hidden first argument that makes the agent binary run as a
// container init.
const Arg = "init"

// EnvMarker must be set in the environment of a container init, so that a
// stray "init" on the kernel command line is never mistaken for it.
const EnvMarker = "_GONDOLIN_INIT"

// SyncFd is the child's end of the socket to the agent.
const SyncFd = 3

// CgroupNSFd is, for an exec process with JoinCgroupNS, the cgroup
// namespace of the container init.
const CgroupNSFd = 4

// MountNSFd is, for an exec process, the mount namespace of the container
// init, which the child joins itself: setns(CLONE_NEWNS) is refused to a
// thread that shares its fs_struct with others, which every thread of the
// agent does. It follows CgroupNSFd: an exec process is given both.
const MountNSFd = 5

// StartByte released the child from the agent's side.
const StartByte = 's'

// PrestartedArg follows Arg for an init started before its container
// exists (see Main): it reports ReadyByte on the sync socket once it runs,
// then waits for its stdio (SendStdio) before it reads its Config.
const PrestartedArg = "prestarted"

// ReadyByte tells the agent a prestarted init is running.
const ReadyByte = 'r'

// Mount is a mount the child makes itself because it depends on its
// namespaces (proc for the PID namespace, mqueue for IPC, cgroup2 for the
// cgroup namespace). Target is an absolute guest path, already resolved
// inside the container root.
type Mount struct {
	Source string  `json:"source"`
	Target string  `json:"target"`
	Type   string  `json:"type"`
	Flags  uintptr `json:"flags"`
	Data   string  `json:"data,omitempty"`
}

// Rlimit is an OCI rlimit.
type Rlimit struct {
	Type string `json:"type"`
	Hard uint64 `json:"hard"`
	Soft uint64 `json:"soft"`
}

// Config is what the agent sends the child.
type Config struct {
	// Rootfs is the container root, a mount point in the agent's mount
	// namespace; the init makes it the root of its own (see enterRoot).
	Rootfs         string   `json:"rootfs"`
	Hostname       string   `json:"hostname,omitempty"`
	Args           []string `json:"args"`
	Env            []string `json:"env"`
	Cwd            string   `json:"cwd"`
	UID            uint32   `json:"uid"`
	GID            uint32   `json:"gid"`
	AdditionalGids []uint32 `json:"additional_gids,omitempty"`
	Umask          *uint32  `json:"umask,omitempty"`
	Rlimits        []Rlimit `json:"rlimits,omitempty"`
	NoNewPrivs     bool     `json:"no_new_privileges,omitempty"`
	// CgroupNS asks the child to unshare a cgroup namespace rooted at
	// the container's cgroup (before making Mounts).
	CgroupNS bool    `json:"cgroupns,omitempty"`
	Mounts   []Mount `json:"mounts,omitempty"`
	// Sysctl is written under /proc/sys in the child's namespaces.
	Sysctl map[string]string `json:"sysctl,omitempty"`
	// MaskedPaths and ReadonlyPaths are container paths, applied as runc
	// does after Mounts (so that /proc paths are those of the new proc).
	MaskedPaths   []string `json:"masked_paths,omitempty"`
	ReadonlyPaths []string `json:"readonly_paths,omitempty"`
	// Caps are the process's capability sets (all empty: none at all).
	Caps CapSets `json:"caps"`
	// Exec marks an exec process: it was started in the namespaces of the
	// container init, so hostname, mounts, sysctls and paths are not set
	// up again. It must join the init's mount namespace (JoinMountNS):
	// without it it would run in the agent's.
	Exec bool `json:"exec,omitempty"`
	// JoinCgroupNS: join the cgroup namespace at CgroupNSFd first.
	JoinCgroupNS bool `json:"join_cgroupns,omitempty"`
	// JoinMountNS: join the mount namespace at MountNSFd, whose root is
	// the container's (an exec process).
	JoinMountNS bool `json:"join_mountns,omitempty"`
}

// Result is the child's answer: ready, or why not.
type Result struct {
	Error string `json:"error,omitempty"`
}

const maxMessage = 1 << 20

// WriteMessage writes v as a 4-byte big-endian length and JSON.
func WriteMessage(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err = w.Write(buf)
	return err
}

// ReadMessage reads a message written by WriteMessage into v.
func ReadMessage(r io.Reader, v any) error {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(l[:])
	if n > maxMessage {
		return fmt.Errorf("message of %d bytes is too large", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// WarmCodec makes encoding/json build and cache its encoders and decoders
// of Config, Result and the types in them, which it otherwise builds by
// reflection on first use. Done before a VM snapshot is saved, the
// containers of every VM resumed from it skip that work, and under TCG the
// translation of its code.
func WarmCodec() {
	var umask uint32
	cfg := Config{
		Args: []string{""}, Umask: &umask, Rlimits: []Rlimit{{}}, Mounts: []Mount{{}},
		Sysctl: map[string]string{"": ""},
	}
	if b, err := json.Marshal(cfg); err == nil {
		_ = json.Unmarshal(b, &cfg)
	}
	var res Result
	if b, err := json.Marshal(Result{Error: " "}); err == nil {
		_ = json.Unmarshal(b, &res)
	}
}
