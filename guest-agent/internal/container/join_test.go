package container

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// A container that joins another's IPC, UTS and PID namespaces is in them
// (and sees its queues, hostname and processes); one that does not is not.
func TestPodJoinNamespaces(t *testing.T) {
	e := newPodEnv(t)
	mq := &api.Mount{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue"}
	reqA := request("a", e.rootfs("a"), "touch /dev/mqueue/from-a && exec sleep 1000", mq)
	reqA.Hostname = "pod-host"
	pidA := e.run(reqA)
	waitComm(t, pidA, "sleep")

	reqB := request("b", e.rootfs("b"), "hostname > /host; cat /proc/1/comm > /pid1; ls /dev/mqueue > /mq; echo > /ready; exec sleep 1000", mq)
	reqB.JoinContainerId = "a"
	reqB.JoinNamespaces = []string{"uts", "ipc", "pid"}
	pidB := e.run(reqB)
	e.waitFile("b/rootfs/ready")

	reqC := request("c", e.rootfs("c"), "hostname > /host; cat /proc/1/comm > /pid1; ls /dev/mqueue > /mq; echo > /ready; exec sleep 1000", mq)
	reqC.Hostname = "other"
	pidC := e.run(reqC)
	e.waitFile("c/rootfs/ready")

	for _, ns := range []string{"ipc", "uts", "pid"} {
		a, b, c := nsLink(t, pidA, ns), nsLink(t, pidB, ns), nsLink(t, pidC, ns)
		if a != b {
			t.Errorf("%s: joiner's %s, want a's %s", ns, b, a)
		}
		if a == c {
			t.Errorf("%s: the container that joins nothing is in a's (%s)", ns, c)
		}
	}
	if a, b := nsLink(t, pidA, "mnt"), nsLink(t, pidB, "mnt"); a == b {
		t.Errorf("the joiner shares a's mount namespace %s; it must have its own", a)
	}
	if got := e.waitFile("b/rootfs/host"); got != "pod-host" {
		t.Errorf("joiner's hostname %q, want pod-host", got)
	}
	if got := e.waitFile("c/rootfs/host"); got != "other" {
		t.Errorf("other container's hostname %q, want other", got)
	}
	if got := e.waitFile("b/rootfs/pid1"); got != "sleep" {
		t.Errorf("the joiner's PID 1 is %q, want a's init (sleep)", got)
	}
	if got := e.waitFile("c/rootfs/pid1"); got != "sh" {
		t.Errorf("the other container's PID 1 is %q, want its own init (sh)", got)
	}
	if got := e.waitFile("b/rootfs/mq"); got != "from-a" {
		t.Errorf("the joiner's /dev/mqueue lists %q, want a's queue from-a", got)
	}
	if got, _ := os.ReadFile(filepath.Join(e.share, "c/rootfs/mq")); strings.TrimSpace(string(got)) != "" {
		t.Errorf("the other container sees queues %q", got)
	}
	// An exec in the joiner is in the shared namespaces too.
	if err := e.m.Exec(context.Background(), &api.ExecProcessRequest{ContainerId: "b", ExecId: "e",
		Process: &api.Process{Args: []string{"sh", "-c", "cat /proc/1/comm > /exec-pid1; hostname >> /exec-pid1"}, Env: []string{"PATH=/bin"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Start(context.Background(), "b", "e"); err != nil {
		t.Fatal(err)
	}
	if s := e.wait("b", "e"); s != 0 {
		t.Fatalf("exec in the joiner exited with %d", s)
	}
	if got, _ := os.ReadFile(filepath.Join(e.share, "b/rootfs/exec-pid1")); string(got) != "sleep\npod-host\n" {
		t.Errorf("exec in the joiner sees PID 1 and hostname %q, want sleep and pod-host", got)
	}
	// The joiner may repeat the namespace's hostname.
	reqD := request("d", e.rootfs("d"), "exec sleep 1000")
	reqD.JoinContainerId, reqD.JoinNamespaces, reqD.Hostname = "a", []string{"uts"}, "pod-host"
	e.run(reqD)
}

// A joining container's init is forked in the namespaces it joins, never
// the prestarted init (which has new ones); the next ordinary container
// still takes that.
func TestPodJoinerSkipsPrestart(t *testing.T) {
	e := newPodEnv(t)
	ctx := context.Background()
	initOf := func(id string) *Process {
		c, err := e.m.get(id)
		if err != nil {
			t.Fatal(err)
		}
		return c.procs[""]
	}
	if err := e.m.Prestart(ctx); err != nil {
		t.Fatal(err)
	}
	pidA := e.run(request("a", e.rootfs("a"), "exec sleep 1000"))
	if !initOf("a").prestarted {
		t.Error("the first container did not take the prestarted init")
	}
	if err := e.m.Prestart(ctx); err != nil {
		t.Fatal(err)
	}
	req := request("b", e.rootfs("b"), "exec sleep 1000")
	req.JoinContainerId, req.JoinNamespaces = "a", []string{"pid", "ipc"}
	pidB := e.run(req)
	if initOf("b").prestarted || e.m.prestarted == nil {
		t.Fatal("the joining container took the prestarted init")
	}
	for _, ns := range []string{"pid", "ipc"} {
		if a, b := nsLink(t, pidA, ns), nsLink(t, pidB, ns); a != b {
			t.Errorf("%s: joiner in %s, want a's %s", ns, b, a)
		}
	}
	if a, b := nsLink(t, pidA, "uts"), nsLink(t, pidB, "uts"); a == b {
		t.Errorf("the joiner is in a's UTS namespace %s, which it did not join", a)
	}
	pidC := e.run(request("c", e.rootfs("c"), "exec sleep 1000"))
	if !initOf("c").prestarted || e.m.prestarted != nil {
		t.Error("the next ordinary container did not take the prestarted init")
	}
	if a, c := nsLink(t, pidA, "pid"), nsLink(t, pidC, "pid"); a == c {
		t.Errorf("the ordinary container is in a's PID namespace %s", a)
	}
}

func TestPodJoinRefused(t *testing.T) {
	e := newPodEnv(t)
	reqA := request("a", e.rootfs("a"), "exec sleep 1000")
	reqA.Hostname = "pod-host"
	e.run(reqA)
	e.run(request("done", e.rootfs("done"), "exit 0"))
	e.wait("done", "")
	r := e.rootfs("b")
	for _, c := range []struct {
		name     string
		jid      string
		ns       []string
		hostname string
		is       func(error) bool
		says     string
	}{
		{"namespaces without a container", "", []string{"ipc"}, "", errdefs.IsInvalidArgument, "need join_container_id"},
		{"container without namespaces", "a", nil, "", errdefs.IsInvalidArgument, "join_namespaces"},
		{"unknown namespace", "a", []string{"ipc", "net"}, "", errdefs.IsInvalidArgument, `unknown namespace "net"`},
		{"mount namespace", "a", []string{"mnt"}, "", errdefs.IsInvalidArgument, "accepted are ipc, uts and pid"},
		{"duplicate", "a", []string{"ipc", "uts", "ipc"}, "", errdefs.IsInvalidArgument, `"ipc" given twice`},
		{"itself", "b", []string{"ipc"}, "", errdefs.IsInvalidArgument, "itself"},
		{"bad id", "../a", []string{"ipc"}, "", errdefs.IsInvalidArgument, "join_container_id"},
		{"unknown container", "nope", []string{"ipc"}, "", errdefs.IsNotFound, `"nope"`},
		{"stopped container", "done", []string{"ipc"}, "", errdefs.IsFailedPrecondition, "not running"},
		{"another hostname", "a", []string{"uts", "ipc"}, "mine", errdefs.IsInvalidArgument, `whose hostname is "pod-host"`},
	} {
		req := request("b", r, "true")
		req.JoinContainerId, req.JoinNamespaces, req.Hostname = c.jid, c.ns, c.hostname
		_, err := e.m.Create(context.Background(), req)
		if err == nil || !c.is(err) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v; want an error saying %q", c.name, err, c.says)
		}
		if _, ok := e.m.containers["b"]; ok {
			t.Fatalf("%s: the refused container exists", c.name)
		}
	}
}

// Killing every process of a container in a shared PID namespace
// (SignalProcess all) reaches its own cgroup's only, never the other
// container's; its init, not PID 1 there, dies of SIGTERM.
func TestPodKillAllSharedPID(t *testing.T) {
	e := newPodEnv(t)
	pidA := e.run(request("a", e.rootfs("a"), "sleep 1000 & exec sleep 1000"))
	for _, sig := range []unix.Signal{unix.SIGTERM, unix.SIGKILL} {
		id := "b-" + unix.SignalName(sig)
		req := request(id, e.rootfs(id), "sleep 1000 & exec sleep 1000")
		req.JoinContainerId, req.JoinNamespaces = "a", []string{"pid", "ipc", "uts"}
		e.run(req)
		b, _ := e.m.get(id)
		waitPids(t, b.cgroup, 2)
		if err := e.m.Signal(id, "", sig, true); err != nil {
			t.Fatal(err)
		}
		if s := e.wait(id, ""); s != 128+uint32(sig) {
			t.Errorf("%s: the joiner's init exited with %d, want %d", unix.SignalName(sig), s, 128+uint32(sig))
		}
		waitPids(t, b.cgroup, 0)
		a, _ := e.m.get("a")
		if pids, _ := cgroupPids(a.cgroup); len(pids) != 2 || !alive(pidA) {
			t.Fatalf("after kill all of %s, a has processes %v (init %d alive: %v); want both", id, pids, pidA, alive(pidA))
		}
	}
}

// waitPids waits until the cgroup has n processes.
func waitPids(t *testing.T, cg string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, err := cgroupPids(cg)
		if err == nil && len(pids) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cgroup %s has processes %v, %v; want %d", cg, pids, err, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Deleting the container whose namespaces others joined: a joiner of its
// IPC and UTS namespaces keeps running in them (exec too); a joiner of its
// PID namespace is killed by the kernel with that namespace's init, and
// the agent reports it so.
func TestPodDeleteJoinedContainer(t *testing.T) {
	e := newPodEnv(t)
	reqA := request("a", e.rootfs("a"), "exec sleep 1000")
	reqA.Hostname = "pod-host"
	e.run(reqA)
	reqI := request("ipc", e.rootfs("ipc"), "exec sleep 1000")
	reqI.JoinContainerId, reqI.JoinNamespaces = "a", []string{"ipc", "uts"}
	pidI := e.run(reqI)
	reqP := request("pid", e.rootfs("pid"), "exec sleep 1000")
	reqP.JoinContainerId, reqP.JoinNamespaces = "a", []string{"pid"}
	e.run(reqP)

	if err := e.m.Delete(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if s := e.wait("pid", ""); s != 137 {
		t.Errorf("the PID namespace joiner exited with %d, want 137 (killed with the namespace's init)", s)
	}
	if err := e.m.Delete(context.Background(), "pid"); err != nil {
		t.Errorf("delete the PID namespace joiner: %v", err)
	}

	if !alive(pidI) {
		t.Fatal("the IPC/UTS joiner died with the container it joined")
	}
	if err := e.m.Exec(context.Background(), &api.ExecProcessRequest{ContainerId: "ipc", ExecId: "e",
		Process: &api.Process{Args: []string{"sh", "-c", "hostname > /host"}, Env: []string{"PATH=/bin"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Start(context.Background(), "ipc", "e"); err != nil {
		t.Fatal(err)
	}
	if s := e.wait("ipc", "e"); s != 0 {
		t.Fatalf("exec exited with %d", s)
	}
	if got := e.waitFile("ipc/rootfs/host"); got != "pod-host" {
		t.Errorf("the UTS namespace's hostname after its first container's delete: %q", got)
	}
	if err := e.m.Signal("ipc", "", unix.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	if s := e.wait("ipc", ""); s != 137 {
		t.Errorf("the IPC/UTS joiner exited with %d, want 137", s)
	}
	// Nothing left to join.
	req := request("late", e.rootfs("late"), "true")
	req.JoinContainerId, req.JoinNamespaces = "a", []string{"ipc"}
	if _, err := e.m.Create(context.Background(), req); !errdefs.IsNotFound(err) {
		t.Errorf("joining a deleted container: %v", err)
	}
}
