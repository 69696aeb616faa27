// Package vmpool keeps VMs started and idle, a few per VM shape, and hands
// each to the first process that asks for one of its shape, with the
// descriptors that make it that process's own: a pidfd of every process
// of the VM and the connections the VM made (its console, its NIC). A VM
// is handed over once and never comes back: the pool only ever hands out
// VMs that no container has run in.
//
// The pool is a process of its own (a shim's per-container life is too
// short to keep VMs for the next container), reached over a unix socket
// only root can open. It knows nothing of containers: what a VM of a
// shape is, and how one is started and stopped, is its Starter's.
package vmpool

import (
	"encoding/json"
	"fmt"
)

// Shape is what makes two VMs interchangeable for a container: the VMs a
// pool keeps for a shape are all started the same way from it.
type Shape struct {
	MemoryMiB uint64 `json:"memory_mib"`
	CPUs      uint32 `json:"cpus"`
	// NIC says the VM has a network interface.
	NIC bool `json:"nic"`
}

// ParseShape reads a shape's Key (a VM pool's command line carries one).
func ParseShape(text string) (Shape, error) {
	var s Shape
	if err := json.Unmarshal([]byte(text), &s); err != nil {
		return Shape{}, fmt.Errorf("VM shape %q: %w", text, err)
	}
	if s.MemoryMiB == 0 || s.CPUs == 0 {
		return Shape{}, fmt.Errorf("VM shape %q: memory_mib and cpus must be set", text)
	}
	return s, nil
}

// Key names the shape: its JSON, which ParseShape reads.
func (s Shape) Key() string {
	b, _ := json.Marshal(s)
	return string(b)
}

func (s Shape) String() string {
	return fmt.Sprintf("%d MiB, %d vCPU, nic=%v", s.MemoryMiB, s.CPUs, s.NIC)
}

// request is what a client sends: one line of JSON.
type request struct {
	Shape Shape `json:"shape"`
}

// Handover describes a VM the pool hands over. The descriptors come with
// it in the same message, in this order: the VMM's pidfd, each file
// server's pidfd, then FileCount more (VM.Files: the VM's connections).
type Handover struct {
	// Found is false when the pool had no idle VM of the shape; nothing
	// else is set then.
	Found bool `json:"found"`
	// Dir is the VM's directory: its sockets (qmp.sock, channel.sock,
	// fs-<tag>.sock) and whatever its Starter made there. Its path is
	// on the command lines of the VM's processes.
	Dir    string `json:"dir,omitempty"`
	VMMPid int    `json:"vmm_pid,omitempty"`
	// FileServers are the VM's file servers, in its shares' order.
	FileServers []FileServer `json:"file_servers,omitempty"`
	// Restored says the VM resumed from a snapshot.
	Restored  bool `json:"restored,omitempty"`
	FileCount int  `json:"files,omitempty"`
}

// FileServer is one file server of a handed-over VM.
type FileServer struct {
	Pid    int    `json:"pid"`
	Socket string `json:"socket"`
}

// accepted is the client's answer once it has taken the VM over; a
// client that closes the connection without it leaves the VM to the pool,
// which stops it.
const accepted = "accepted\n"

// maxFiles bounds the descriptors of one handover.
const maxFiles = 16
