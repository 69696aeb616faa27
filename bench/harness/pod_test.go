package harness

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCRIWantFromRunFlags(t *testing.T) {
	for _, c := range []struct {
		flags []string
		want  criWant
	}{
		{[]string{"--runtime", "io.containerd.runc.v2", "--runc-binary", "/t/runc"}, criWant{Shim: "io.containerd.runc.v2", BinaryName: "/t/runc"}},
		{[]string{"--runtime", "io.containerd.gondolin.v1"}, criWant{Shim: "io.containerd.gondolin.v1"}},
		{[]string{"--runtime", "io.containerd.gondolin.v1", "--runtime-config-path", "/w/gondolin-snapshot/config.toml"},
			criWant{Shim: "io.containerd.gondolin.v1", ConfigPath: "/w/gondolin-snapshot/config.toml"}},
		{[]string{"--runtime", "/b/bin/containerd-shim-gondolin-v1"}, criWant{Shim: "/b/bin/containerd-shim-gondolin-v1"}},
	} {
		if got, err := criWantFromRunFlags(c.flags); err != nil || got != c.want {
			t.Errorf("criWantFromRunFlags(%q) = %+v, %v; want %+v", c.flags, got, err, c.want)
		}
	}
	for _, bad := range [][]string{
		{"--runtime", "x", "--net-host"}, // a flag CRI cannot be checked against
		{"--runtime"},                    // no value
		{"--runc-binary", "/t/runc"},     // no runtime
		nil,
	} {
		if _, err := criWantFromRunFlags(bad); err == nil {
			t.Errorf("criWantFromRunFlags(%q) must fail", bad)
		}
	}
}

// crictlInfo is the part of `crictl info` (containerd 2.2) the bench reads.
const crictlInfo = `{"cniconfig": {}, "config": {"containerd": {"defaultRuntimeName": "runc", "runtimes": {
  "gondolin": {"runtimeType": "io.containerd.gondolin.v1", "runtimePath": "", "options": null, "sandboxer": "podsandbox"},
  "gondolin-snapshot": {"runtimeType": "io.containerd.gondolin.v1", "runtimePath": "",
    "options": {"ConfigPath": "/w/gondolin-snapshot/config.toml"}},
  "gondolin-base": {"runtimeType": "io.containerd.gondolin.v1", "runtimePath": "/b/bin/containerd-shim-gondolin-v1", "options": null},
  "runc": {"runtimeType": "io.containerd.runc.v2", "runtimePath": "",
    "options": {"BinaryName": "/t/runc", "IoGid": 0, "SystemdCgroup": false}}
}}}, "status": {}}`

func TestCheckCRIHandler(t *testing.T) {
	handlers, err := criRuntimes([]byte(crictlInfo))
	if err != nil {
		t.Fatal(err)
	}
	ok := map[string]criWant{
		"runc":              {Shim: "io.containerd.runc.v2", BinaryName: "/t/runc"},
		"gondolin":          {Shim: "io.containerd.gondolin.v1"},
		"gondolin-snapshot": {Shim: "io.containerd.gondolin.v1", ConfigPath: "/w/gondolin-snapshot/config.toml"},
		"gondolin-base":     {Shim: "/b/bin/containerd-shim-gondolin-v1"},
	}
	for h, want := range ok {
		if err := checkCRIHandler(handlers, h, want); err != nil {
			t.Errorf("checkCRIHandler(%s, %+v): %v", h, want, err)
		}
	}
	for _, c := range []struct {
		h    string
		want criWant
		says string
	}{
		{"gondolin-snapshot-base", criWant{Shim: "io.containerd.gondolin.v1"}, "no CRI runtime handler"},
		{"runc", criWant{Shim: "io.containerd.runc.v2", BinaryName: "/other/runc"}, `BinaryName "/t/runc", want "/other/runc"`},
		{"gondolin", criWant{Shim: "io.containerd.gondolin.v1", ConfigPath: "/w/x.toml"}, `ConfigPath "", want "/w/x.toml"`},
		{"gondolin-snapshot", criWant{Shim: "io.containerd.gondolin.v1"}, `ConfigPath "/w/gondolin-snapshot/config.toml", want ""`},
		{"gondolin-base", criWant{Shim: "io.containerd.gondolin.v1"}, "runtime_path"},
		{"gondolin", criWant{Shim: "/b/bin/containerd-shim-gondolin-v1"}, "want /b/bin/containerd-shim-gondolin-v1"},
	} {
		err := checkCRIHandler(handlers, c.h, c.want)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("checkCRIHandler(%s, %+v) = %v, want an error saying %q", c.h, c.want, err, c.says)
		}
	}
	if _, err := criRuntimes([]byte(`{"config": {}}`)); err == nil {
		t.Error("crictl info without runtimes must fail")
	}
	if _, err := criRuntimes([]byte(`time="…" level=warning`)); err == nil {
		t.Error("crictl info that is not JSON must fail")
	}
}

func TestFirstCRILogLine(t *testing.T) {
	for _, c := range []struct {
		text, want string
		ok         bool
	}{
		{"", "", false},
		{"2026-12-07T18:33:27.964086794Z stdout F @@first", "", false}, // still being written
		{"2026-12-07T18:33:27.964086794Z stdout F @@first\n", "@@first", true},
		{"2026-12-07T18:33:27.964086794Z stdout F @@first\n2026-12-07T18:33:28Z stdout F second\n", "@@first", true},
		{"2026-12-07T18:33:27Z stdout P @@fi\n2026-12-07T18:33:27Z stderr F oops\n", "oops", true},
		{"2026-12-07T18:33:27Z stdout P @@fi\n2026-12-07T18:33:27Z stdout F rst\n", "@@first", true},
		{"2026-12-07T18:33:27Z stdout P @@fi\n", "", false},
		{"2026-12-07T18:33:27Z stdout F\n", "", true}, // an empty line
		{"2026-12-07T18:33:27Z stdout F a b  c\n", "a b  c", true},
	} {
		got, ok, err := firstCRILogLine(c.text)
		if err != nil || got != c.want || ok != c.ok {
			t.Errorf("firstCRILogLine(%q) = %q, %v, %v; want %q, %v", c.text, got, ok, err, c.want, c.ok)
		}
	}
	for _, bad := range []string{"@@first\n", "yesterday stdout F x\n", "2026-12-07T18:33:27Z stdin F x\n", "2026-12-07T18:33:27Z stdout X x\n"} {
		if _, _, err := firstCRILogLine(bad); err == nil {
			t.Errorf("firstCRILogLine(%q) must fail", bad)
		}
	}
}

func TestWaitFirstLogLine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "second.log")
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = os.WriteFile(path, []byte("2026-12-07T18:33:27Z stdout F @@first\n"), 0o644)
	}()
	if err := waitFirstLogLine(context.Background(), path, "@@first", 5*time.Second); err != nil {
		t.Errorf("waitFirstLogLine: %v", err)
	}
	if err := waitFirstLogLine(context.Background(), path, "@@other", time.Second); err == nil || !strings.Contains(err.Error(), `"@@first", want "@@other"`) {
		t.Errorf("a wrong first line: %v", err)
	}
	if err := waitFirstLogLine(context.Background(), filepath.Join(dir, "none.log"), "@@first", 50*time.Millisecond); err == nil {
		t.Error("a log that never appears must time out")
	}
}

func TestPodConfigs(t *testing.T) {
	b, _ := json.Marshal(podConfig("bench-gondolin-pod-0-abcd", "/w/pods/x/logs"))
	var pod struct {
		Metadata struct {
			Name, UID string
		}
		LogDirectory string `json:"log_directory"`
		Linux        struct {
			SecurityContext struct {
				NamespaceOptions map[string]int `json:"namespace_options"`
			} `json:"security_context"`
		}
	}
	if err := json.Unmarshal(b, &pod); err != nil {
		t.Fatal(err)
	}
	if pod.Metadata.Name != "bench-gondolin-pod-0-abcd" || pod.Metadata.UID != pod.Metadata.Name || pod.LogDirectory != "/w/pods/x/logs" {
		t.Errorf("pod config: %s", b)
	}
	// Kubernetes' default: each container its own PID namespace; network
	// and IPC the pod's.
	if ns := pod.Linux.SecurityContext.NamespaceOptions; ns["pid"] != 1 || ns["network"] != 0 || ns["ipc"] != 0 {
		t.Errorf("namespace options %v, want pid CONTAINER (1), the rest POD (0)", ns)
	}
	b, _ = json.Marshal(podContainerConfig("second", "img", []string{"sh", "-c", "echo x"}))
	if got := string(b); got != `{"command":["sh","-c","echo x"],"image":{"image":"img"},"linux":{},"log_path":"second.log","metadata":{"name":"second"}}` {
		t.Errorf("container config: %s", got)
	}
}
