package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func runArgs(t *testing.T, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	var out, errOut bytes.Buffer
	status = run(context.Background(), args, ioStreams{stdout: &out, stderr: &errOut, now: func() time.Time {
		return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	}})
	return out.String(), errOut.String(), status
}

// Every manual has the sections of a man page, fits 80 columns, and lists
// every option the command accepts.
func TestManuals(t *testing.T) {
	pages := map[string][]string{"gondolin": {"--help"}}
	for _, c := range commands() {
		pages[c.name] = []string{c.name, "--help"}
	}
	for name, args := range pages {
		out, errOut, status := runArgs(t, args...)
		if status != exitOK || errOut != "" {
			t.Fatalf("%s: status %d, %q", name, status, errOut)
		}
		sections := []string{"NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "EXAMPLES", "SEE ALSO"}
		if name != "gondolin" {
			sections = append(sections, "OPTIONS")
		}
		for _, s := range sections {
			if !strings.Contains(out, "\n"+s+"\n") && !strings.HasPrefix(out, s+"\n") {
				t.Errorf("%s: no %s section", name, s)
			}
		}
		for _, want := range []string{"0      Success.", "1      The operation failed", "2      Bad usage"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: EXIT STATUS lacks %q", name, want)
			}
		}
		for i, line := range strings.Split(out, "\n") {
			if n := len([]rune(line)); n > 80 {
				t.Errorf("%s: line %d is %d columns: %q", name, i+1, n, line)
			}
		}
		if name != "gondolin" {
			if help, _, _ := runArgs(t, "help", name); help != out {
				t.Errorf("gondolin help %s differs from gondolin %s --help", name, name)
			}
		}
	}
	out, _, _ := runArgs(t, "audit", "--help")
	for _, opt := range []string{"--all", "--audit-dir DIR", "--config FILE", "--denied", "--follow", "--json", "--namespace NS"} {
		if !strings.Contains(out, "\n       "+opt+"\n") {
			t.Errorf("audit manual lacks option %s", opt)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "a command is needed"},
		{[]string{"frob"}, `unknown command "frob"`},
		{[]string{"help", "frob"}, "expected one of"},
		{[]string{"audit"}, "name a container"},
		{[]string{"audit", "a", "b"}, "one container at a time"},
		{[]string{"audit", "--all", "a"}, "not both"},
		{[]string{"audit", "--bogus", "a"}, "flag provided but not defined: -bogus"},
		{[]string{"install"}, "--containerd, --docker, or both"},
		{[]string{"install", "--containerd", "extra"}, `unexpected argument "extra"`},
		{[]string{"install", "--containerd", "--shim", "relative/shim"}, "must be an absolute path"},
		{[]string{"install", "--docker", "--shim", "/nonexistent/shim"}, "no such file"},
		{[]string{"uninstall", "--shim", "/x"}, "flag provided but not defined: -shim"},
	} {
		_, errOut, status := runArgs(t, tc.args...)
		if status != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("gondolin %q: status %d, %q; want 2 and a message saying %q", tc.args, status, errOut, tc.want)
		}
	}
}

// Options may follow the container; -- ends them.
func TestAuditArguments(t *testing.T) {
	dir := t.TempDir()
	rec := `{"time":"2026-12-07T15:22:49Z","container":"web","protocol":"https","host":"evil.test","port":443,"method":"POST","path":"/upload","decision":"denied","reason":"evil.test:443 is not in io.gondolin.net.allow"}`
	ok := `{"time":"2026-12-07T15:22:48Z","container":"web","protocol":"dns","host":"api.x.test","method":"A","decision":"allowed","reason":"synthetic answer"}`
	if err := os.MkdirAll(filepath.Join(dir, "default"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"web", "--web"} {
		if err := os.WriteFile(filepath.Join(dir, "default", id+".jsonl"), []byte(ok+"\n"+rec+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, status := runArgs(t, "audit", "web", "--denied", "--audit-dir", dir)
	if status != exitOK || errOut != "" || strings.Contains(out, "api.x.test") || !strings.Contains(out, "evil.test:443") {
		t.Fatalf("status %d\n%s%s", status, out, errOut)
	}
	// --config: the files are in the runtime config's audit_dir.
	cfg := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfg, []byte("audit_dir = \""+dir+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, status := runArgs(t, "audit", "web", "--denied", "--config", cfg); status != exitOK || !strings.Contains(out, "evil.test:443") {
		t.Fatalf("--config: status %d\n%s%s", status, out, errOut)
	}
	if _, errOut, status := runArgs(t, "audit", "web", "--config", cfg, "--audit-dir", dir); status != exitUsage || !strings.Contains(errOut, "not both") {
		t.Fatalf("--config with --audit-dir: status %d %s", status, errOut)
	}
	out, _, status = runArgs(t, "audit", "--audit-dir", dir, "--json", "--", "--web")
	if status != exitOK || out != ok+"\n"+rec+"\n" {
		t.Fatalf("status %d\n%s", status, out)
	}

	// A line that is not a record: the rest is shown, the status is 1.
	f, _ := os.OpenFile(filepath.Join(dir, "default", "web.jsonl"), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("garbage\n")
	f.Close()
	out, errOut, status = runArgs(t, "audit", "web", "--audit-dir", dir)
	if status != exitFailed || !strings.Contains(out, "evil.test") || !strings.Contains(errOut, "web.jsonl:3:") || !strings.Contains(errOut, "1 lines could not be shown") {
		t.Fatalf("status %d\n%s%s", status, out, errOut)
	}
	_, errOut, status = runArgs(t, "audit", "nope", "--audit-dir", dir)
	if status != exitFailed || !strings.Contains(errOut, "no audit file for container nope") {
		t.Fatalf("status %d %s", status, errOut)
	}
}

// --dry-run shows the change and writes nothing; then install writes it,
// a second install changes nothing, and uninstall puts the files back.
func TestInstallCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	orig := "# my containerd\nversion = 3\n\n[grpc]\n  address = \"/run/x.sock\"\n"
	if err := os.WriteFile(cfg, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	daemon := filepath.Join(dir, "daemon.json")
	args := []string{"--containerd", "--docker", "--containerd-config", cfg, "--docker-config", daemon}

	out, _, status := runArgs(t, append([]string{"install", "--dry-run"}, args...)...)
	if status != exitOK || !strings.Contains(out, "+imports = [\""+filepath.Join(dir, "conf.d", "gondolin.toml")+"\"] # added by gondolin install\n") ||
		!strings.Contains(out, "--- /dev/null\n+++ "+daemon) || !strings.Contains(out, "dry run, nothing written") {
		t.Fatalf("status %d\n%s", status, out)
	}
	if b, _ := os.ReadFile(cfg); string(b) != orig {
		t.Fatal("--dry-run wrote the config")
	}
	if _, err := os.Stat(daemon); err == nil {
		t.Fatal("--dry-run wrote daemon.json")
	}

	out, _, status = runArgs(t, append([]string{"install"}, args...)...)
	if status != exitOK || !strings.Contains(out, "systemctl restart containerd") || !strings.Contains(out, "systemctl reload docker") ||
		!strings.Contains(out, "backed up "+cfg+" to "+cfg+".gondolin-20260102T030405Z.bak") {
		t.Fatalf("status %d\n%s", status, out)
	}
	out, _, status = runArgs(t, append([]string{"install"}, args...)...)
	if status != exitOK || strings.Count(out, "already installed") != 2 || strings.Contains(out, "wrote") {
		t.Fatalf("second install: status %d\n%s", status, out)
	}
	out, _, status = runArgs(t, append([]string{"uninstall"}, args...)...)
	if status != exitOK || !strings.Contains(out, "systemctl restart containerd") {
		t.Fatalf("uninstall: status %d\n%s", status, out)
	}
	if b, _ := os.ReadFile(cfg); string(b) != orig {
		t.Fatalf("uninstall left\n%s", b)
	}

	// A broken config fails before anything is written.
	if err := os.WriteFile(daemon, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, status := runArgs(t, append([]string{"install"}, args...)...)
	if status != exitFailed || !strings.Contains(errOut, "not valid JSON") {
		t.Fatalf("status %d %s", status, errOut)
	}
	if b, _ := os.ReadFile(cfg); string(b) != orig {
		t.Fatal("containerd's config was written although Docker's plan failed")
	}
}
