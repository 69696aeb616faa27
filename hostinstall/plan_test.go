package hostinstall

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, path, text string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func backups(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if strings.HasSuffix(p, ".bak") {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Install and uninstall on real files: the order of the writes, the
// backup, the kept mode, the diff of a dry run.
func TestPlanContainerdApply(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	orig := string(sample(t, "containerd-v2-kubeadm.toml"))
	writeFile(t, cfg, orig, 0o640)
	o := ContainerdOptions{Config: cfg}
	drop := filepath.Join(dir, "conf.d", "gondolin.toml")

	p, err := PlanContainerd(true, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Changes) != 2 || p.Changes[0].Path != drop || p.Changes[1].Path != cfg || p.Reload == "" {
		t.Fatalf("plan %+v", p)
	}
	diff := p.Diff()
	for _, want := range []string{
		"--- /dev/null\n+++ " + drop + "\n@@ -0,0 +1,11 @@\n+# Written by gondolin install;",
		"--- " + cfg + "\n+++ " + cfg + "\n@@ -1,7 +1,7 @@\n # containerd 1.7 config",
		"-imports = []\n+imports = [\"" + drop + "\"]\n",
	} {
		if !strings.Contains(diff, want) {
			t.Fatalf("diff lacks %q:\n%s", want, diff)
		}
	}
	if got := readFile(t, cfg); got != orig || len(backups(t, dir)) != 0 {
		t.Fatalf("planning wrote something")
	}

	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	done, err := p.Apply(t0)
	if err != nil {
		t.Fatalf("%v (%q)", err, done)
	}
	backup := cfg + ".gondolin-20250301T120000Z.bak"
	if want := []string{"wrote " + drop, "backed up " + cfg + " to " + backup, "wrote " + cfg}; strings.Join(done, "|") != strings.Join(want, "|") {
		t.Fatalf("done %q", done)
	}
	if readFile(t, backup) != orig {
		t.Fatal("the backup is not the original")
	}
	for _, f := range []string{cfg, backup} {
		if st, _ := os.Stat(f); st.Mode().Perm() != 0o640 {
			t.Fatalf("%s has mode %v, want the original 0640", f, st.Mode().Perm())
		}
	}

	p, err = PlanContainerd(true, o)
	if err != nil || len(p.Changes) != 0 || !strings.HasPrefix(p.Notes[0], "already installed") {
		t.Fatalf("second install: %v %+v", err, p)
	}

	p, err = PlanContainerd(false, o)
	if err != nil || len(p.Changes) != 2 || p.Changes[0].Path != cfg || p.Changes[1].Path != drop || !p.Changes[1].NoBackup {
		t.Fatalf("uninstall plan: %v %+v", err, p)
	}
	if _, err := p.Apply(t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if readFile(t, cfg) != orig {
		t.Fatal("uninstall did not restore the config")
	}
	if _, err := os.Stat(drop); !os.IsNotExist(err) {
		t.Fatalf("drop-in still there: %v", err)
	}
	if n := len(backups(t, dir)); n != 2 {
		t.Fatalf("%d backups, want the main config's two", n)
	}
}

// A file changed between plan and apply is not overwritten.
func TestApplyRefusesChangedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "daemon.json")
	writeFile(t, path, `{"debug": true}`, 0o644)
	p, err := PlanDocker(true, DockerOptions{Config: path})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, `{"debug": false}`, 0o644)
	if _, err := p.Apply(time.Now()); err == nil || !strings.Contains(err.Error(), "changed since it was read") {
		t.Fatalf("error %v", err)
	}
	if readFile(t, path) != `{"debug": false}` {
		t.Fatal("overwritten")
	}
}

// A registration by hand in another imported file counts; a missing
// import is reported.
func TestPlanContainerdOtherImports(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	writeFile(t, cfg, "version = 3\nimports = [\"site/*.toml\", \"missing.toml\"]\n", 0o644)
	writeFile(t, filepath.Join(dir, "site", "rt.toml"), "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.gondolin]\n  runtime_type = \"io.containerd.gondolin.v1\"\n", 0o644)
	p, err := PlanContainerd(true, ContainerdOptions{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(p.Notes, "\n")
	if len(p.Changes) != 0 || !strings.Contains(notes, "missing.toml, which does not exist") || !strings.Contains(notes, "site/rt.toml registers") {
		t.Fatalf("%+v", p)
	}
}

// containerd itself reads what install writes: the runtime is in its
// merged config, and the settings around it are as they were. Needs the
// containerd binary (the dev environment's, with source .cache/dev/env).
func TestContainerdReadsInstall(t *testing.T) {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Skip("containerd is not on PATH")
	}
	for _, tc := range []struct {
		name, sample string
		inPlace      bool
		keeps        string
	}{
		{"default", "containerd-v2.2.1-default.toml", false, "default_runtime_name = 'runc'"},
		{"default in place", "containerd-v2.2.1-default.toml", true, "default_runtime_name = 'runc'"},
		{"version 2", "containerd-v2-kubeadm.toml", false, "SystemdCgroup = true"},
		{"version 2 in place", "containerd-v2-kubeadm.toml", true, "SystemdCgroup = true"},
		{"docker's", "docker-containerd.io-config.toml", false, "'io.containerd.grpc.v1.cri'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "config.toml")
			writeFile(t, cfg, string(sample(t, tc.sample)), 0o644)
			p, err := PlanContainerd(true, ContainerdOptions{Config: cfg, InPlace: tc.inPlace})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Apply(time.Now()); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "--config", cfg, "config", "dump").CombinedOutput()
			if err != nil {
				t.Fatalf("containerd config dump: %v\n%s", err, out)
			}
			dump := string(out)
			_, entry, ok := strings.Cut(dump, "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.gondolin]\n")
			if !ok {
				t.Fatalf("no gondolin runtime in containerd's merged config:\n%s", dump)
			}
			entry, _, _ = strings.Cut(entry, "\n\n")
			for _, want := range []string{"runtime_type = 'io.containerd.gondolin.v1'", "pod_annotations = ['io.gondolin.*']", "container_annotations = ['io.gondolin.*']"} {
				if !strings.Contains(entry, want) {
					t.Errorf("the entry lacks %q:\n%s", want, entry)
				}
			}
			if !strings.Contains(dump, tc.keeps) {
				t.Errorf("the merged config lost %q:\n%s", tc.keeps, dump)
			}
		})
	}
}

// dockerd --validate accepts what install writes (dockerd from PATH: the
// dev environment's).
func TestDockerdValidatesInstall(t *testing.T) {
	bin, err := exec.LookPath("dockerd")
	if err != nil {
		t.Skip("dockerd is not on PATH")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "daemon.json")
	writeFile(t, path, string(sample(t, "daemon-typical.json")), 0o644)
	p, err := PlanDocker(true, DockerOptions{Config: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Apply(time.Now()); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "--validate", "--config-file", path).CombinedOutput(); err != nil {
		t.Fatalf("dockerd --validate: %v\n%s", err, out)
	}
}

func TestUnifiedDiff(t *testing.T) {
	a := "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\n14\n15\n"
	b := "1\n2\n3\n4\nfive\n6\n7\n8\n9\n10\n11\n12\n13\n14\n15\nsixteen"
	want := `--- f
+++ f
@@ -2,7 +2,7 @@
 2
 3
 4
-5
+five
 6
 7
 8
@@ -13,3 +13,4 @@
 13
 14
 15
+sixteen
\ No newline at end of file
`
	if got := unifiedDiff("f", []byte(a), []byte(b)); got != want {
		t.Fatalf("got\n%s", got)
	}
	if got := unifiedDiff("f", []byte("x\n"), nil); got != "--- f\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n" {
		t.Fatalf("removal:\n%s", got)
	}
	if unifiedDiff("f", []byte(a), []byte(a)) != "" {
		t.Fatal("no change, yet a diff")
	}
}
