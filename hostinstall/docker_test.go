package hostinstall

import (
	"strings"
	"testing"
)

const etcDaemon = "/etc/docker/daemon.json"

func dockerRoundTrip(t *testing.T, cur []byte, o DockerOptions) []byte {
	t.Helper()
	next, _, err := installDocker(cur, o)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	again, notes, err := installDocker(next, o)
	if err != nil || string(again) != string(next) || len(notes) != 1 || !strings.HasPrefix(notes[0], "already installed") {
		t.Fatalf("second install is not a no-op: %v %q", err, notes)
	}
	back, _, err := uninstallDocker(next, o)
	if err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	if len(strings.TrimSpace(string(cur))) > 0 && string(back) != string(cur) {
		t.Fatalf("uninstall left\n%s\nwant\n%s", back, cur)
	}
	if _, notes, err := uninstallDocker(back, o); err != nil || !strings.HasPrefix(notes[0], "not installed") {
		t.Fatalf("second uninstall: %v %q", err, notes)
	}
	return next
}

func TestDockerTypical(t *testing.T) {
	cur := sample(t, "daemon-typical.json")
	next := dockerRoundTrip(t, cur, DockerOptions{Config: etcDaemon})
	want := strings.Replace(string(cur), `            "path": "nvidia-container-runtime"
        }
    },`, `            "path": "nvidia-container-runtime"
        },
        "gondolin": {"runtimeType": "io.containerd.gondolin.v1"}
    },`, 1)
	if string(next) != want {
		t.Fatalf("got\n%s", unifiedDiff(etcDaemon, cur, next))
	}
}

func TestDockerNoRuntimesKey(t *testing.T) {
	cur := []byte("{\n\t\"data-root\": \"/srv/docker\",\n\t\"features\": {\"containerd-snapshotter\": true}\n}\n")
	next := dockerRoundTrip(t, cur, DockerOptions{Config: etcDaemon, Shim: "/opt/gondolin/bin/containerd-shim-gondolin-v1"})
	want := "{\n\t\"data-root\": \"/srv/docker\",\n\t\"features\": {\"containerd-snapshotter\": true},\n" +
		"\t\"runtimes\": {\n\t  \"gondolin\": {\"runtimeType\": \"/opt/gondolin/bin/containerd-shim-gondolin-v1\"}\n\t}\n}\n"
	if string(next) != want {
		t.Fatalf("got\n%s", next)
	}
	// One line stays one line.
	next = dockerRoundTrip(t, []byte(`{"debug": true}`), DockerOptions{Config: etcDaemon})
	if string(next) != `{"debug": true, "runtimes": {"gondolin": {"runtimeType": "io.containerd.gondolin.v1"}}}` {
		t.Fatalf("got %s", next)
	}
}

func TestDockerAbsentFile(t *testing.T) {
	for _, cur := range [][]byte{nil, []byte("\n")} {
		next := dockerRoundTrip(t, cur, DockerOptions{Config: etcDaemon})
		want := "{\n  \"runtimes\": {\n    \"gondolin\": {\"runtimeType\": \"io.containerd.gondolin.v1\"}\n  }\n}\n"
		if string(next) != want {
			t.Fatalf("got\n%s", next)
		}
		// Uninstall leaves an empty object: dockerd reads it as no
		// settings, and a dockerd started with --config-file naming the
		// file still finds it.
		back, _, _ := uninstallDocker(next, DockerOptions{Config: etcDaemon})
		if string(back) != "{}\n" {
			t.Fatalf("uninstall left %q", back)
		}
	}
}

// The developer setup's daemon.json registers gondolin with options, and
// makes it the default: install has nothing to do, uninstall refuses.
func TestDockerDevConfig(t *testing.T) {
	cur := []byte(`{
  "runtimes": {
    "gondolin": {"runtimeType": "io.containerd.gondolin.v1"},
    "gondolin-small": {"runtimeType": "io.containerd.gondolin.v1", "options": {"ConfigPath": "/work/main/.cache/dev/gondolin-small.toml"}}
  },
  "default-runtime": "gondolin"
}`)
	next, notes, err := installDocker(cur, DockerOptions{Config: etcDaemon})
	if err != nil || string(next) != string(cur) || !strings.HasPrefix(notes[0], "already installed") {
		t.Fatalf("%v %q", err, notes)
	}
	if _, _, err := uninstallDocker(cur, DockerOptions{Config: etcDaemon}); err == nil || !strings.Contains(err.Error(), "default-runtime") {
		t.Fatalf("uninstall of the default runtime: %v", err)
	}
}

func TestDockerRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		install   bool
		want      string
	}{
		{"not JSON", `{"a": }`, true, "not valid JSON"},
		{"not an object", `[1]`, true, "must hold a JSON object"},
		{"duplicate key", `{"runtimes": {}, "runtimes": {}}`, true, "appears twice"},
		{"runtimes not an object", `{"runtimes": []}`, true, "runtimes must be an object"},
		{"another runtime named gondolin", `{"runtimes": {"gondolin": {"path": "/usr/bin/runsc"}}}`, true, "already has runtimes.gondolin"},
		{"uninstall another runtime named gondolin", `{"runtimes": {"gondolin": {"path": "/usr/bin/runsc"}}}`, false, "not the gondolin shim"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := installDocker
			if !tc.install {
				f = uninstallDocker
			}
			_, _, err := f([]byte(tc.doc), DockerOptions{Config: etcDaemon})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// Removing the middle one of three runtimes keeps the others' layout.
func TestDockerUninstallMiddle(t *testing.T) {
	cur := []byte(`{
  "runtimes": {
    "a": {"runtimeType": "io.containerd.a.v1"},
    "gondolin": {"runtimeType": "io.containerd.gondolin.v1"},
    "b": {"runtimeType": "io.containerd.b.v1"}
  }
}`)
	next, _, err := uninstallDocker(cur, DockerOptions{Config: etcDaemon})
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "runtimes": {
    "a": {"runtimeType": "io.containerd.a.v1"},
    "b": {"runtimeType": "io.containerd.b.v1"}
  }
}`
	if string(next) != want {
		t.Fatalf("got\n%s", next)
	}
}
