package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// check's status is 1 when an item fails (here: a kernel that is not
// there), 2 for bad usage; the report names the failed item either way.
func TestCheckStatus(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	missing := filepath.Join(dir, "no-vmlinuz")
	if err := os.WriteFile(cfg, []byte("kernel_path = \""+missing+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, status := runArgs(t, "check", "--config", cfg, "--containerd-config", filepath.Join(dir, "c.toml"), "--docker-config", filepath.Join(dir, "d.json"))
	if status != exitFailed || !strings.Contains(out, "fail  kernel      "+missing) || !strings.Contains(errOut, "kernel") {
		t.Fatalf("status %d\nstdout:\n%s\nstderr:\n%s", status, out, errOut)
	}
	out, _, status = runArgs(t, "check", "--json", "--config", cfg, "--containerd-config", filepath.Join(dir, "c.toml"), "--docker-config", filepath.Join(dir, "d.json"))
	var rep struct {
		CanRun bool `json:"can_run"`
		Items  []struct{ Name, Status, Summary string }
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || status != exitFailed || rep.CanRun {
		t.Fatalf("status %d, %v:\n%s", status, err, out)
	}
	_, errOut, status = runArgs(t, "check", "extra")
	if status != exitUsage || !strings.Contains(errOut, "takes options only") {
		t.Fatalf("status %d, %q", status, errOut)
	}
	_, errOut, status = runArgs(t, "check", "--config", filepath.Join(dir, "none.toml"))
	if status != exitUsage || !strings.Contains(errOut, "none.toml") {
		t.Fatalf("status %d, %q", status, errOut)
	}
}
