//go:build integration

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// operatorConfig is a runtime config for the egress upstream with a named
// policy "xtest" (api.x.test and its TOKEN) and TOKEN's value read from a
// host file.
func operatorConfig(u *upstream, auditDir, secretFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "audit_dir = %q\nupstream_ca_file = %q\n", auditDir, u.caFile)
	fmt.Fprintf(&b, "[policies.xtest]\nallow = [\"api.x.test:%d\"]\n[policies.xtest.secrets]\nTOKEN = \"api.x.test:%d\"\n", u.port, u.port)
	fmt.Fprintf(&b, "[secrets.TOKEN]\nfile = %q\nhosts = [\"api.x.test:%d\"]\n[upstream_hosts]\n", secretFile, u.port)
	for _, n := range upstreamNames {
		fmt.Fprintf(&b, "%q = [\"127.0.0.1\"]\n", n)
	}
	return b.String()
}

// A secret whose value the runtime config reads from a host file reaches
// its host through a named policy, while Docker never holds the value: not
// in docker inspect, not in the guest. A file others can read fails the
// create, naming the secret and the file, not the value.
func TestDockerSecretFromHostFile(t *testing.T) {
	setConfig := dockerTestConfig(t)
	u := startUpstream(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "token")
	if err := os.WriteFile(secretFile, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	setConfig(operatorConfig(u, filepath.Join(dir, "audit"), secretFile))

	name := newID(t)
	t.Cleanup(func() { docker(t, nil, "rm", "-f", name) })
	url := fmt.Sprintf("https://api.x.test:%d/from-file", u.port)
	res := docker(t, nil, "run", "--name", name, "--runtime", "gondolin-test", "--network", "host",
		"--annotation", "io.gondolin.policy=xtest", distroImage(t),
		"bash", "-c", `curl -fsS --max-time 20 -H "Authorization: Bearer $TOKEN" `+url+` && echo "env:$TOKEN"; curl -s -o /dev/null -w 'other:%{http_code}\n' --max-time 20 https://a.x.test:`+fmt.Sprint(u.port)+`/; true`)
	if res.code != 0 || !strings.Contains(res.stdout, "hello from api.x.test:") || !strings.Contains(res.stdout, "auth-ok") {
		t.Fatalf("the named policy's host with the host file's secret: %s\nupstream saw %q", res, u.seen())
	}
	if !strings.Contains(res.stdout, "env:GONDOLIN_SECRET_") || strings.Contains(res.stdout+res.stderr, testSecret) {
		t.Fatalf("the guest should see TOKEN as a placeholder only: %s", res)
	}
	// Synthetic DNS answers only the policy's names: a.x.test is not one.
	if !strings.Contains(res.stdout, "other:000") {
		t.Fatalf("a host outside the named policy should not even resolve: %s", res)
	}
	inspect := docker(t, nil, "inspect", name)
	if inspect.code != 0 || strings.Contains(inspect.stdout, testSecret) || strings.Contains(inspect.stdout, "TOKEN=") {
		t.Fatalf("docker inspect should hold no secret value and no TOKEN variable: %s", inspect)
	}

	// Whoever writes the annotations cannot bind the host's secret to a
	// host the runtime config does not list for it.
	other := newID(t)
	t.Cleanup(func() { docker(t, nil, "rm", "-f", other) })
	res = docker(t, nil, "run", "--name", other, "--runtime", "gondolin-test", "--network", "host",
		"--annotation", fmt.Sprintf("io.gondolin.secret.TOKEN=a.x.test:%d", u.port), distroImage(t), "true")
	if res.code == 0 || !strings.Contains(res.stderr, "secret TOKEN may not be sent to https://a.x.test") || strings.Contains(res.stdout+res.stderr, testSecret) {
		t.Fatalf("want the create refused: the secret bound to a host its source does not list: %s", res)
	}
	assertFailedRunLeavesNothing(t, other)

	// A secret file others can read is refused.
	if err := os.Chmod(secretFile, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := newID(t)
	t.Cleanup(func() { docker(t, nil, "rm", "-f", bad) })
	res = docker(t, nil, "run", "--name", bad, "--runtime", "gondolin-test", "--network", "host",
		"--annotation", "io.gondolin.policy=xtest", distroImage(t), "true")
	if res.code == 0 || !strings.Contains(res.stderr, "secret TOKEN") || !strings.Contains(res.stderr, secretFile) || !strings.Contains(res.stderr, "mode 0644") {
		t.Fatalf("want the create refused naming secret TOKEN, %s and its mode: %s", secretFile, res)
	}
	if strings.Contains(res.stdout+res.stderr, testSecret) {
		t.Fatalf("the refusal shows the value: %s", res)
	}
	assertFailedRunLeavesNothing(t, bad)

	// The shim logs (through containerd's log) never carry the value.
	if logFile := os.Getenv("GONDOLIN_DEV_CONTAINERD_LOG"); logFile != "" {
		b, err := os.ReadFile(logFile)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), testSecret) {
			t.Fatalf("the host secret's value is in containerd's log %s", logFile)
		}
	}
}
