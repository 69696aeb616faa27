package harness

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestGondolinStateDir(t *testing.T) {
	// c478a084a2ae45c6 is the state directory a gondolin shim made for
	// container testegresslargedownload-032f75d2 of namespace default
	// (runtime.StateDir); f8791beba6be35fb is
	// `printf 'gondolin-bench\0bench-gondolin-idle0-0-1a2b' | sha256sum`,
	// its first 16 hex digits: the formula of runtime.StateDir.
	for _, c := range []struct{ ns, id, want string }{
		{"default", "testegresslargedownload-032f75d2", "/run/gondolin/c478a084a2ae45c6"},
		{"gondolin-bench", "bench-gondolin-idle0-0-1a2b", "/run/gondolin/f8791beba6be35fb"},
	} {
		got := gondolinStateDir("/run/gondolin", c.ns, c.id)
		if got != c.want {
			t.Errorf("gondolinStateDir(%q, %q) = %s, want %s", c.ns, c.id, got, c.want)
		}
		if !isGondolinStateDirName(filepath.Base(got)) {
			t.Errorf("%s is not a state directory name", filepath.Base(got))
		}
	}
	// The namespace is part of the name: the same id in another
	// namespace is another container.
	if gondolinStateDir("/r", "a", "b") == gondolinStateDir("/r", "k8s.io", "b") {
		t.Error("the namespace does not change the state directory")
	}
	for _, name := range []string{"vm-pool", "ca", "C478A084A2AE45C6", "c478a084a2ae45c", "c478a084a2ae45c6aa"} {
		if isGondolinStateDirName(name) {
			t.Errorf("%q taken for a state directory", name)
		}
	}
}

func TestParseVMState(t *testing.T) {
	pooled := `{"bundle":"/run/c/default/x","netns_pin":"/run/gondolin/c478a084a2ae45c6/netns","qemu_pid":9469,"virtiofsd_pids":[9461,9465],` +
		`"host_cgroup":"/default/x","vm_dir":"/run/gondolin/vm-pool/f9f5aff8dacef3f1947bc22c/vm-3"}`
	st, err := parseVMState([]byte(pooled))
	if err != nil {
		t.Fatal(err)
	}
	want := vmState{VMMPid: 9469, VirtiofsdPids: []int{9461, 9465}, VMDir: "/run/gondolin/vm-pool/f9f5aff8dacef3f1947bc22c/vm-3"}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("parseVMState = %+v, want %+v", st, want)
	}
	if got := st.pids(); !reflect.DeepEqual(got, []int{9469, 9461, 9465}) {
		t.Errorf("pids = %v", got)
	}
	// A state file written before the VM started records no process.
	st, err = parseVMState([]byte(`{"bundle":"/b"}`))
	if err != nil || st.pids() != nil {
		t.Errorf("a state file without a VM = %+v, %v; want no pids", st, err)
	}
	for _, bad := range []string{`{"qemu_pid":-1}`, `{"virtiofsd_pids":[0]}`, `{"qemu_pid":"12"}`, `not json`} {
		if _, err := parseVMState([]byte(bad)); err == nil {
			t.Errorf("parseVMState(%s) accepted", bad)
		}
	}
}

func TestRecordedVMPIDs(t *testing.T) {
	root := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, name), 0o700); err != nil {
			t.Fatal(err)
		}
		if text != "" {
			if err := os.WriteFile(filepath.Join(root, name, "state.json"), []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("c478a084a2ae45c6", `{"qemu_pid":10,"virtiofsd_pids":[11,12],"vm_dir":"/v"}`)
	write("f8791beba6be35fb", `{"qemu_pid":20}`)
	write("0000000000000001", "") // no state file yet
	write("vm-pool", `{"qemu_pid":99}`)
	got, err := recordedVMPIDs(root)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []int{10, 11, 12, 20}) {
		t.Errorf("recordedVMPIDs = %v, want [10 11 12 20]", got)
	}
	st, ok, err := readVMState(filepath.Join(root, "0000000000000001"))
	if ok || err != nil {
		t.Errorf("a directory without a state file = %+v, %v, %v; want none", st, ok, err)
	}
	if got, err := recordedVMPIDs(filepath.Join(root, "absent")); got != nil || err != nil {
		t.Errorf("no state root = %v, %v; want nothing", got, err)
	}
	write("00000000000000ff", `{"qemu_pid":-3}`)
	if _, err := recordedVMPIDs(root); err == nil || !strings.Contains(err.Error(), "00000000000000ff") {
		t.Errorf("a bad state file: %v; want an error naming it", err)
	}
}

func TestVMPoolServes(t *testing.T) {
	shim := "/opt/gondolin/bin/containerd-shim-gondolin-v1"
	builtin := []string{shim, "vm-pool", "--socket", "/run/gondolin/vm-pool/f9.sock", "--state-root", "/run/gondolin", "--shape", `{"memory_mib":512,"cpus":1,"nic":true}`}
	withConfig := append(append([]string(nil), builtin...), "--config", "/work/bench/gondolin-snapshot/config.toml")
	for _, c := range []struct {
		name   string
		args   []string
		config string
		want   bool
	}{
		{"built-in config, built-in pool", builtin, "", true},
		{"a config, built-in pool", builtin, "/work/bench/gondolin-snapshot/config.toml", false},
		{"built-in config, a config's pool", withConfig, "", false},
		{"the same config", withConfig, "/work/bench/gondolin-snapshot/config.toml", true},
		{"the same config, unclean path", withConfig, "/work/bench//gondolin-snapshot/./config.toml", true},
		{"another config", withConfig, "/work/bench/gondolin-nopool/config.toml", false},
		{"--config=PATH", append(append([]string(nil), builtin...), "--config=/c.toml"), "/c.toml", true},
		{"-config PATH", append(append([]string(nil), builtin...), "-config", "/c.toml"), "/c.toml", true},
		{"a shim, no pool", []string{shim, "-namespace", "gondolin-bench", "-id", "x", "-address", "/run/c.sock"}, "", false},
		{"a shim's start", []string{shim, "start"}, "", false},
		{"a bare command", []string{shim}, "", false},
	} {
		if got := vmPoolServes(c.args, c.config); got != c.want {
			t.Errorf("%s: vmPoolServes(%q, %q) = %v, want %v", c.name, c.args, c.config, got, c.want)
		}
	}
	if got := poolStateRoot(append([]string{shim, "vm-pool"}, "--state-root", "/run/other")); got != "/run/other" {
		t.Errorf("poolStateRoot = %s", got)
	}
	if got := poolStateRoot([]string{shim, "vm-pool"}); got != "/run/gondolin" {
		t.Errorf("poolStateRoot without --state-root = %s, want the shim's default", got)
	}
}

func TestRuntimeConfigPath(t *testing.T) {
	rt := &Runtime{RunFlags: []string{"--runtime", GondolinRuntimeType}}
	if got := rt.ConfigPath(); got != "" {
		t.Errorf("the built-in config's path = %q", got)
	}
	rt.RunFlags = append(rt.RunFlags, "--runtime-config-path", "/w/gondolin-nopool/config.toml")
	if got := rt.ConfigPath(); got != "/w/gondolin-nopool/config.toml" {
		t.Errorf("ConfigPath = %q", got)
	}
}

func TestIdlePoolPIDs(t *testing.T) {
	// The pool 100 started two VMs: 110 (QEMU) with 111, 112 (virtiofsd,
	// 112 with a child 113) was handed to a container; 120 with 121 is
	// idle. Another pool 200 serves another config. 300 is a container's
	// shim.
	tab := procTable{ppid: map[int]int{
		100: 1, 110: 100, 111: 100, 112: 100, 113: 112, 120: 100, 121: 100,
		200: 1, 210: 200, 300: 1, 301: 300,
	}}
	got := tab.idlePoolPIDs([]int{100}, []int{110, 111, 112, 999})
	if want := []int{100, 120, 121}; !reflect.DeepEqual(got, want) {
		t.Errorf("idlePoolPIDs = %v, want %v (the pool and its idle VM, not the handed-over VM nor the other pool)", got, want)
	}
	// Nothing handed over: all of it is the pool's.
	if got, want := tab.idlePoolPIDs([]int{100}, nil), []int{100, 110, 111, 112, 113, 120, 121}; !reflect.DeepEqual(got, want) {
		t.Errorf("idlePoolPIDs without containers = %v, want %v", got, want)
	}
	// A container's recorded VM processes that still exist and what is
	// below them; pid 999 is gone.
	if got, want := tab.descendants(tab.existing([]int{300, 110, 112, 999})), []int{110, 112, 113, 300, 301}; !reflect.DeepEqual(got, want) {
		t.Errorf("descendants of the existing = %v, want %v", got, want)
	}
}

func TestDescribePool(t *testing.T) {
	procs := []Proc{{PID: 100, Name: "containerd-shim-gondolin-v1", PSSKiB: 10240}, {PID: 120, Name: "qemu-system-x86_64", PSSKiB: 102400}, {PID: 121, Name: "virtiofsd", PSSKiB: 5120}}
	want := "incl. VM pool: 3 processes, 115.0 MiB (1 pool process 10.0 MiB, its idle VMs: 2 processes 105.0 MiB)"
	if got := describePool([]int{100}, procs); got != want {
		t.Errorf("describePool = %q, want %q", got, want)
	}
	if got := describePool(nil, nil); !strings.HasPrefix(got, "no VM pool: ") {
		t.Errorf("describePool without a pool = %q", got)
	}
	counted := []Proc{{PID: 120}}
	if got := withoutProcs(procs, counted); len(got) != 2 || got[0].PID != 100 || got[1].PID != 121 {
		t.Errorf("withoutProcs = %+v, want pids 100, 121", got)
	}
}

// TestVMPoolProcsOfThisProcess runs VMPoolProcs and ContainerProcs against
// the real /proc: no pool of a binary that runs none, and a shim that does
// not exist is an error.
func TestVMPoolProcsOfThisProcess(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pools, procs, err := VMPoolProcs(exe, "")
	if err != nil || pools != nil || procs != nil {
		t.Errorf("VMPoolProcs of the test binary = %v, %v, %v; want no pool", pools, procs, err)
	}
	if _, _, err := VMPoolProcs(filepath.Join(t.TempDir(), "missing"), ""); err == nil {
		t.Error("VMPoolProcs of a missing shim binary: no error")
	}
	if _, _, err := VMPoolProcs("", ""); err == nil {
		t.Error("VMPoolProcs without a shim binary: no error")
	}
	if _, err := ContainerProcs("/nonexistent.sock", "gondolin-bench", "no-such-container", true); err == nil {
		t.Error("ContainerProcs of a container without a shim: no error")
	}
}
