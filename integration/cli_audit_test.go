//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// buildGondolinCLI builds cmd/gondolin from this checkout, so the test
// runs the command as it is now, not an older _output/bin/gondolin.
func buildGondolinCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gondolin")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/gondolin")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/gondolin: %v\n%s", err, out)
	}
	return bin
}

// auditRow is one row of gondolin audit's table.
type auditRow struct{ time, decision, proto, host, method, path, rule string }

// The columns are separated by two spaces or more; only RULE, the last,
// holds single spaces.
var columnGap = regexp.MustCompile(` {2,}`)

func parseAuditTable(t *testing.T, out string) []auditRow {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "TIME ") {
		t.Fatalf("no table header:\n%s", out)
	}
	var rows []auditRow
	for _, l := range lines[1:] {
		f := columnGap.Split(l, 7)
		if len(f) != 7 {
			t.Fatalf("row %q has %d columns, want 7:\n%s", l, len(f), out)
		}
		rows = append(rows, auditRow{f[0], f[1], f[2], f[3], f[4], f[5], f[6]})
	}
	return rows
}

// gondolin audit shows what a real container's egress policy decided: its
// allowed HTTPS request with the rule that allowed it, and its denied
// request with why; --denied, --json and an ID prefix searched across
// namespaces agree.
func TestCLIAuditShowsContainerDecisions(t *testing.T) {
	bin := buildGondolinCLI(t)
	u := startUpstream(t)
	cfg, auditDir := runtimeConfig(t, u, "")
	p := u.port
	// The denied request goes to an address of the guest's choosing on a
	// port the policy covers, so that it is an HTTP request the shim
	// parses (and audits with its method and path), not a refused name.
	script := fmt.Sprintf(`curl -fsS --max-time 20 https://api.x.test:%d/hello
		code=$(curl -s -o /dev/null -w '%%{http_code}' --max-time 20 --resolve other.test:%d:1.1.1.1 http://other.test:%d/secret-path); echo "denied:$code"`, p, p, p)
	res, id := egressRun(t, cfg, []string{fmt.Sprintf("io.gondolin.net.allow=api.x.test:%d", p)}, nil, script)
	if res.code != 0 || !strings.Contains(res.stdout, "hello from api.x.test") || !strings.Contains(res.stdout, "denied:403") {
		t.Fatalf("the container's requests: %s", res)
	}

	audit := func(args ...string) result {
		t.Helper()
		return command(t, nil, bin, append([]string{"audit", "--audit-dir", auditDir}, args...)...)
	}
	table := audit("--namespace", namespace(), id)
	if table.code != 0 || table.stderr != "" {
		t.Fatalf("gondolin audit: %s", table)
	}
	t.Logf("gondolin audit %s:\n%s", id, table.stdout)
	rows := parseAuditTable(t, table.stdout)
	var allowed, denied bool
	for _, r := range rows {
		switch {
		case r.decision == "allowed" && r.proto == "https" && r.host == fmt.Sprintf("api.x.test:%d", p) &&
			r.method == "GET" && r.path == "/hello" && strings.HasPrefix(r.rule, "host in io.gondolin.net.allow"):
			allowed = true
		case r.decision == "denied" && r.proto == "http" && r.host == fmt.Sprintf("other.test:%d", p) &&
			r.method == "GET" && r.path == "/secret-path" && strings.Contains(r.rule, "is not in io.gondolin.net.allow"):
			denied = true
		}
	}
	if !allowed || !denied {
		t.Fatalf("the table lacks the allowed request (%v) or the denied one (%v):\n%s", allowed, denied, table.stdout)
	}

	// --denied, by an ID prefix looked up in every namespace.
	onlyDenied := audit("--denied", id[:len(id)-3])
	if onlyDenied.code != 0 {
		t.Fatalf("gondolin audit --denied: %s", onlyDenied)
	}
	for _, r := range parseAuditTable(t, onlyDenied.stdout) {
		if r.decision != "denied" && r.decision != "suppressed" {
			t.Errorf("--denied shows a %s record: %+v", r.decision, r)
		}
	}
	if !strings.Contains(onlyDenied.stdout, "/secret-path") || strings.Contains(onlyDenied.stdout, "/hello") {
		t.Fatalf("--denied:\n%s", onlyDenied.stdout)
	}

	// --json: the records as the shim wrote them, the same as the table.
	js := audit("--json", "--namespace", namespace(), id)
	if js.code != 0 {
		t.Fatalf("gondolin audit --json: %s", js)
	}
	lines := strings.Split(strings.TrimSpace(js.stdout), "\n")
	if len(lines) != len(rows) {
		t.Fatalf("--json has %d records, the table %d", len(lines), len(rows))
	}
	for _, l := range lines {
		var rec struct{ Container, Decision string }
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.Container != id || rec.Decision == "" {
			t.Fatalf("--json line %q: %v", l, err)
		}
	}

	// --all names the container; an unknown one fails with status 1.
	all := audit("--all")
	if all.code != 0 || !strings.Contains(all.stdout, namespace()+"/"+id) {
		t.Fatalf("gondolin audit --all: %s", all)
	}
	if r := audit("no-such-container"); r.code != 1 || !strings.Contains(r.stderr, "no audit file for container no-such-container") {
		t.Fatalf("an unknown container: %s", r)
	}
}
