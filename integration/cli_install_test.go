//go:build integration

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gondolin install registers the runtime in a scratch copy of containerd's
// default config and a scratch daemon.json: the real containerd reads the
// runtime back from its config (config dump, imports and all) and the real
// dockerd accepts daemon.json; a second install changes nothing; uninstall
// gives back the files byte for byte.
func TestCLIInstallScratchConfigs(t *testing.T) {
	bin := buildGondolinCLI(t)
	dir := t.TempDir()
	ctrdConfig := filepath.Join(dir, "containerd", "config.toml")
	if err := os.MkdirAll(filepath.Dir(ctrdConfig), 0o755); err != nil {
		t.Fatal(err)
	}
	def, err := exec.Command("containerd", "config", "default").Output()
	if err != nil {
		t.Fatalf("containerd config default: %v", err)
	}
	// The default imports /etc/containerd/conf.d/*.toml, which is the
	// host's: this copy imports only its own directory.
	def = []byte(strings.Replace(string(def), "imports = ['/etc/containerd/conf.d/*.toml']", "imports = []", 1))
	if err := os.WriteFile(ctrdConfig, def, 0o644); err != nil {
		t.Fatal(err)
	}
	dockerConfig := filepath.Join(dir, "docker", "daemon.json")
	if err := os.MkdirAll(filepath.Dir(dockerConfig), 0o755); err != nil {
		t.Fatal(err)
	}
	origDocker := []byte("{\n  \"log-level\": \"warn\"\n}\n")
	if err := os.WriteFile(dockerConfig, origDocker, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--containerd", "--docker", "--containerd-config", ctrdConfig, "--docker-config", dockerConfig}

	res := command(t, nil, bin, append([]string{"install", "--dry-run"}, args...)...)
	if res.code != 0 || !strings.Contains(res.stdout, "io.containerd.gondolin.v1") {
		t.Fatalf("install --dry-run: %s", res)
	}
	if b, _ := os.ReadFile(ctrdConfig); string(b) != string(def) {
		t.Fatal("--dry-run changed containerd's config")
	}
	res = command(t, nil, bin, append([]string{"install"}, args...)...)
	if res.code != 0 || !strings.Contains(res.stdout+res.stderr, "restart") {
		t.Fatalf("install: %s", res)
	}
	dump := command(t, nil, "containerd", "--config", ctrdConfig, "config", "dump")
	if dump.code != 0 || !strings.Contains(dump.stdout, "runtimes.gondolin]") || !strings.Contains(dump.stdout, "runtime_type = 'io.containerd.gondolin.v1'") {
		t.Fatalf("containerd does not read the runtime back: %s\n%s", dump, dump.stdout)
	}
	if !strings.Contains(dump.stdout, "io.gondolin.*") {
		t.Fatalf("the runtime entry should pass io.gondolin.* annotations on:\n%s", dump.stdout)
	}
	if v := command(t, nil, "dockerd", "--validate", "--config-file", dockerConfig); v.code != 0 {
		t.Fatalf("dockerd --validate: %s", v)
	}
	if b, _ := os.ReadFile(dockerConfig); !strings.Contains(string(b), `"log-level": "warn"`) || !strings.Contains(string(b), "io.containerd.gondolin.v1") {
		t.Fatalf("daemon.json: %s", b)
	}
	again := command(t, nil, bin, append([]string{"install"}, args...)...)
	if again.code != 0 || !strings.Contains(again.stdout+again.stderr, "already installed") {
		t.Fatalf("second install: %s", again)
	}
	res = command(t, nil, bin, append([]string{"uninstall"}, args...)...)
	if res.code != 0 {
		t.Fatalf("uninstall: %s", res)
	}
	if b, _ := os.ReadFile(ctrdConfig); string(b) != string(def) {
		t.Fatalf("uninstall did not give containerd's config back:\n%s", b)
	}
	if b, _ := os.ReadFile(dockerConfig); string(b) != string(origDocker) {
		t.Fatalf("uninstall did not give daemon.json back:\n%s", b)
	}
}
