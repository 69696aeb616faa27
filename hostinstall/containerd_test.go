package hostinstall

import (
	"os"
	"strings"
	"testing"
)

// The samples in testdata are real config texts: containerd-v2.2.1-default.toml
// is `containerd config default` of containerd v2.2.1 (the dev environment's),
// docker-containerd.io-config.toml the config Docker's containerd.io package
// installs (version 1, CRI disabled), containerd-v2-kubeadm.toml a version 2
// config as containerd 1.7 writes it, trimmed, with comments added by hand.

func sample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	etcConfig = "/etc/containerd/config.toml"
	etcDropIn = "/etc/containerd/conf.d/gondolin.toml"
)

// roundTrip installs, checks a second install changes nothing, uninstalls,
// and checks the files are back byte for byte.
func roundTrip(t *testing.T, cur containerdFiles, o ContainerdOptions) containerdFiles {
	t.Helper()
	next, notes, err := installContainerd(cur, o)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	again, notes2, err := installContainerd(next, o)
	if err != nil {
		t.Fatalf("second install: %v", err)
	}
	if string(again.main) != string(next.main) || string(again.dropIn) != string(next.dropIn) ||
		len(notes2) != 1 || !strings.HasPrefix(notes2[0], "already installed") {
		t.Fatalf("second install is not a no-op: %q\n%s", notes2, again.main)
	}
	back, unotes, err := uninstallContainerd(next, o)
	if err != nil {
		t.Fatalf("uninstall: %v (install notes %q)", err, notes)
	}
	if (back.main == nil) != (cur.main == nil) || string(back.main) != string(cur.main) {
		t.Fatalf("uninstall left the main config as\n%s\nwant\n%s\n(notes %q)", back.main, cur.main, unotes)
	}
	if (back.dropIn == nil) != (cur.dropIn == nil) || string(back.dropIn) != string(cur.dropIn) {
		t.Fatalf("uninstall left the drop-in as %q", back.dropIn)
	}
	again, unotes2, err := uninstallContainerd(back, o)
	if err != nil || len(unotes2) != 1 || !strings.HasPrefix(unotes2[0], "not installed") || string(again.main) != string(back.main) {
		t.Fatalf("second uninstall: %v %q", err, unotes2)
	}
	return next
}

// containerd 2's default config imports /etc/containerd/conf.d/*.toml: the
// drop-in alone registers the runtime, and the main file is not touched.
func TestContainerdDefaultConfigGlobCoversDropIn(t *testing.T) {
	main := sample(t, "containerd-v2.2.1-default.toml")
	next := roundTrip(t, containerdFiles{main: main}, ContainerdOptions{Config: etcConfig})
	if string(next.main) != string(main) {
		t.Fatalf("the main config changed although its glob covers the drop-in")
	}
	want := `# Written by gondolin install; gondolin uninstall --containerd removes it.
# Registers the gondolin runtime (io.containerd.gondolin.v1) with containerd's CRI
# plugin (Kubernetes, crictl); imported by /etc/containerd/config.toml.
# ctr and Docker name the runtime themselves and do not need it.
version = 3

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.gondolin]
  runtime_type = "io.containerd.gondolin.v1"
  # CRI passes only the annotations listed here on to the runtime.
  pod_annotations = ["io.gondolin.*"]
  container_annotations = ["io.gondolin.*"]
`
	if string(next.dropIn) != want {
		t.Fatalf("drop-in:\n%s\nwant\n%s", next.dropIn, want)
	}
}

// Elsewhere the glob does not cover the drop-in: one element is added to
// the imports array, nothing else changes.
func TestContainerdDefaultConfigElsewhereGetsImport(t *testing.T) {
	main := sample(t, "containerd-v2.2.1-default.toml")
	o := ContainerdOptions{Config: "/srv/ctd/config.toml"}
	next := roundTrip(t, containerdFiles{main: main}, o)
	want := strings.Replace(string(main), "imports = ['/etc/containerd/conf.d/*.toml']",
		`imports = ['/etc/containerd/conf.d/*.toml', "/srv/ctd/conf.d/gondolin.toml"]`, 1)
	if string(next.main) != want {
		t.Fatalf("main config:\n%s", unifiedDiff(o.Config, main, next.main))
	}
}

// A version 2 file gets a version 2 drop-in (the v2 CRI plugin name), and
// an imports key after its version line when it has none.
func TestContainerdV2(t *testing.T) {
	main := sample(t, "containerd-v2-kubeadm.toml")
	// This sample has imports = []: the element goes inside.
	next := roundTrip(t, containerdFiles{main: main}, ContainerdOptions{Config: etcConfig})
	if !strings.Contains(string(next.main), "\nimports = [\""+etcDropIn+"\"]\n") {
		t.Fatalf("main config:\n%s", unifiedDiff(etcConfig, main, next.main))
	}
	if !strings.Contains(string(next.dropIn), "version = 2\n") ||
		!strings.Contains(string(next.dropIn), `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.gondolin]`) {
		t.Fatalf("drop-in:\n%s", next.dropIn)
	}

	noImports := strings.Replace(string(main), "imports = []\n", "", 1)
	next = roundTrip(t, containerdFiles{main: []byte(noImports)}, ContainerdOptions{Config: etcConfig})
	d := unifiedDiff(etcConfig, []byte(noImports), next.main)
	if !strings.Contains(d, "\n version = 2\n+imports = [\""+etcDropIn+"\"] # added by gondolin install\n") ||
		strings.Count(d, "\n+") != 2 || strings.Count(d, "\n-") != 0 {
		t.Fatalf("main config:\n%s", d)
	}
}

// Docker's containerd.io config has no version (1) and disables the CRI:
// it gets an import after its one key, a version 3 drop-in, and a note.
func TestContainerdDockerPackageConfig(t *testing.T) {
	main := sample(t, "docker-containerd.io-config.toml")
	o := ContainerdOptions{Config: etcConfig}
	_, notes, err := installContainerd(containerdFiles{main: main}, o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(notes, "\n"), "disables containerd's CRI plugin") {
		t.Errorf("no note about the disabled CRI: %q", notes)
	}
	next := roundTrip(t, containerdFiles{main: main}, o)
	d := unifiedDiff(etcConfig, main, next.main)
	if !strings.Contains(d, "\n disabled_plugins = [\"cri\"]\n+imports = [") {
		t.Fatalf("main config:\n%s", d)
	}
	if !strings.Contains(string(next.dropIn), "version = 3\n") {
		t.Fatalf("drop-in:\n%s", next.dropIn)
	}
	o.InPlace = true
	if _, _, err := installContainerd(containerdFiles{main: main}, o); err == nil || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("in-place edit of a version 1 config: %v", err)
	}
}

// In place: the entry is appended between markers; comments stay.
func TestContainerdInPlace(t *testing.T) {
	for _, name := range []string{"containerd-v2.2.1-default.toml", "containerd-v2-kubeadm.toml"} {
		t.Run(name, func(t *testing.T) {
			main := sample(t, name)
			o := ContainerdOptions{Config: etcConfig, InPlace: true, Shim: "/opt/gondolin/bin/containerd-shim-gondolin-v1"}
			next := roundTrip(t, containerdFiles{main: main}, o)
			if next.dropIn != nil {
				t.Fatalf("in place wrote a drop-in")
			}
			added := strings.TrimPrefix(string(next.main), string(main))
			if len(added) == len(next.main) || !strings.HasPrefix(added, "\n"+blockBegin+"\n") ||
				!strings.Contains(added, `runtime_path = "/opt/gondolin/bin/containerd-shim-gondolin-v1"`) ||
				!strings.HasSuffix(added, blockEnd+"\n") {
				t.Fatalf("appended:\n%s", added)
			}
		})
	}
}

// Without a main config, install creates one that imports the drop-in,
// and uninstall removes both.
func TestContainerdNoConfig(t *testing.T) {
	next := roundTrip(t, containerdFiles{}, ContainerdOptions{Config: etcConfig})
	want := mainMarker + "version = 3\nimports = [\"" + etcDropIn + "\"] " + importMarker + "\n"
	if string(next.main) != want {
		t.Fatalf("main config:\n%s", next.main)
	}
	roundTrip(t, containerdFiles{}, ContainerdOptions{Config: etcConfig, InPlace: true})
}

// Imports written over several lines, with comments, a relative glob that
// does not cover the drop-in and a trailing comma.
func TestContainerdMultilineImports(t *testing.T) {
	main := []byte(`version = 3
imports = [
  "extra/*.toml", # site settings
  # more to come
  '/etc/containerd/tuning.toml',
]
root = "/var/lib/containerd"
`)
	o := ContainerdOptions{Config: etcConfig}
	next := roundTrip(t, containerdFiles{main: main}, o)
	if !strings.Contains(string(next.main), `  '/etc/containerd/tuning.toml', "`+etcDropIn+`",`+"\n]") {
		t.Fatalf("main config:\n%s", next.main)
	}
	// A relative glob that covers it: nothing to add.
	covered := []byte("version = 3\nimports = [\"conf.d/*.toml\"]\n")
	next = roundTrip(t, containerdFiles{main: covered}, o)
	if string(next.main) != string(covered) {
		t.Fatalf("main config changed although conf.d/*.toml covers the drop-in:\n%s", next.main)
	}
}

func TestContainerdRefusals(t *testing.T) {
	v3 := `version = 3
[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "%s"
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.gondolin]
  runtime_type = "%s"
`
	o := ContainerdOptions{Config: etcConfig}
	for _, tc := range []struct {
		name      string
		files     containerdFiles
		install   bool
		o         ContainerdOptions
		wantError string
		wantNote  string
	}{
		{"another runtime named gondolin", containerdFiles{main: tomlf(v3, "runc", "io.containerd.runc.v2")}, true, o, "runtime_type = \"io.containerd.runc.v2\"", ""},
		{"registered by hand", containerdFiles{main: tomlf(v3, "runc", RuntimeType)}, true, o, "", "already installed: /etc/containerd/config.toml registers"},
		{"uninstall of a hand registration", containerdFiles{main: tomlf(v3, "runc", RuntimeType)}, false, o, "did not write that entry", ""},
		{"uninstall of the default runtime", containerdFiles{main: []byte("version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd]\n  default_runtime_name = \"gondolin\"\n")}, false, o, "default_runtime_name", ""},
		{"another shim path", containerdFiles{main: tomlf(v3, "runc", RuntimeType)}, true, ContainerdOptions{Config: etcConfig, Shim: "/opt/x"}, "runtime_path", ""},
		{"a drop-in of someone else's", containerdFiles{main: []byte("version = 3\n"), dropIn: []byte("version = 3\n")}, true, o, "not written by gondolin install", ""},
		{"registered in another import", containerdFiles{main: []byte("version = 3\n"), others: map[string][]byte{"/etc/containerd/rt.toml": tomlf(v3, "runc", RuntimeType)}}, false, o, "/etc/containerd/rt.toml registers", ""},
		{"not TOML", containerdFiles{main: []byte("version = \n")}, true, o, "not valid TOML", ""},
		{"version 4", containerdFiles{main: []byte("version = 4\n")}, true, o, "version = 4", ""},
		{"nothing to uninstall", containerdFiles{main: []byte("version = 3\n")}, false, o, "", "not installed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := installContainerd
			if !tc.install {
				f = uninstallContainerd
			}
			next, notes, err := f(tc.files, tc.o)
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantError)
				}
				return
			}
			if err != nil || len(notes) != 1 || !strings.Contains(notes[0], tc.wantNote) {
				t.Fatalf("%v %q, want a note saying %q", err, notes, tc.wantNote)
			}
			if string(next.main) != string(tc.files.main) || string(next.dropIn) != string(tc.files.dropIn) {
				t.Fatalf("files changed")
			}
		})
	}
}

func tomlf(format string, args ...any) []byte {
	s := format
	for _, a := range args {
		s = strings.Replace(s, "%s", a.(string), 1)
	}
	return []byte(s)
}

// An inline table on the way to the entry cannot take a new table: the
// in-place edit fails with a clear error instead of writing broken TOML.
func TestContainerdInPlaceInlineTable(t *testing.T) {
	main := []byte("version = 3\n[plugins.\"io.containerd.cri.v1.runtime\"]\n  containerd = { runtimes = { runc = { runtime_type = \"io.containerd.runc.v2\" } } }\n")
	_, _, err := installContainerd(containerdFiles{main: main}, ContainerdOptions{Config: etcConfig, InPlace: true})
	if err == nil || !strings.Contains(err.Error(), "not valid TOML") {
		t.Fatalf("error %v", err)
	}
}

func TestScanTop(t *testing.T) {
	doc := []byte(`# head
version = 2 # two
"quoted.key" = 'x'
a.b = { c = [1, 2], d = "]" }
s = """
[not a header]
"""
imports = [ "a" , 'b',
]
[table]
x = 1
`)
	top, err := scanTop(doc)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, k := range top.keys {
		names = append(names, k.name)
	}
	if got := strings.Join(names, " "); got != "version quoted.key a.b s imports" {
		t.Fatalf("keys %q", got)
	}
	if string(doc[top.headerAt:top.headerAt+7]) != "[table]" {
		t.Fatalf("header at %d", top.headerAt)
	}
	k, _ := top.key("imports")
	elems, err := arrayElements(doc, k.value.start)
	if err != nil || len(elems) != 2 || string(doc[elems[1].start:elems[1].end]) != "'b'" {
		t.Fatalf("elements %v %v", elems, err)
	}
}

// Without --shim, an entry naming the shim by path is installed already;
// with another --shim it is not, and install says how to change it.
func TestContainerdShimPath(t *testing.T) {
	o := ContainerdOptions{Config: etcConfig, Shim: "/opt/gondolin/bin/containerd-shim-gondolin-v1"}
	next, _, err := installContainerd(containerdFiles{main: []byte("version = 3\n")}, o)
	if err != nil {
		t.Fatal(err)
	}
	o.Shim = ""
	if _, notes, err := installContainerd(next, o); err != nil || !strings.HasPrefix(notes[0], "already installed") {
		t.Fatalf("without --shim: %v %q", err, notes)
	}
	o.Shim = "/usr/local/bin/containerd-shim-gondolin-v1"
	if _, _, err := installContainerd(next, o); err == nil || !strings.Contains(err.Error(), "uninstall --containerd first") {
		t.Fatalf("another --shim: %v", err)
	}
	d, _, err := installDocker(nil, DockerOptions{Config: etcDaemon, Shim: "/opt/gondolin/bin/containerd-shim-gondolin-v1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, notes, err := installDocker(d, DockerOptions{Config: etcDaemon}); err != nil || !strings.HasPrefix(notes[0], "already installed") {
		t.Fatalf("docker without --shim: %v %q", err, notes)
	}
}
