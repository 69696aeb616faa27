package container

import (
	"os"
	"strings"
	"testing"
)

// The fds of an exec process are fixed (initproc.CgroupNSFd, then
// initproc.MountNSFd): a mount namespace without the cgroup namespace
// before it would land on the wrong number, so spawn refuses it.
func TestSpawnMountNSNeedsCgroupNS(t *testing.T) {
	m := testManager()
	c := &Container{ID: "c", procs: map[string]*Process{}}
	ns, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	err = m.spawn(c, newProcess("c", "e"), spawnSpec{stdio: &stdioStreams{}, mountNS: ns})
	if err == nil || !strings.Contains(err.Error(), "cgroup namespace") {
		t.Fatalf("spawn with a mount namespace and no cgroup namespace: %v", err)
	}
	if len(c.procs) != 0 {
		t.Fatalf("a process was registered: %v", c.procs)
	}
}

// The agent's own mount namespace is never taken for an init's.
func TestOwnMountNSRefusesTheAgents(t *testing.T) {
	self, err := os.Open("/proc/self/ns/mnt")
	if err != nil {
		t.Skip(err)
	}
	defer self.Close()
	if err := ownMountNS(self); err == nil {
		t.Fatal("the agent's own mount namespace was accepted as the init's")
	}
}
