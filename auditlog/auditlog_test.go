package auditlog

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Records as the shim writes them (taken from real audit files, with the
// container renamed).
const (
	recDNS     = `{"time":"2026-12-07T15:22:48.133781564Z","container":"web","protocol":"dns","host":"api.x.test","method":"A","decision":"allowed","reason":"synthetic answer"}`
	recAllowed = `{"time":"2026-12-07T15:22:48.200000000Z","container":"web","protocol":"https","host":"api.x.test","port":443,"method":"GET","path":"/hello","decision":"allowed","reason":"host in io.gondolin.net.allow; secrets substituted","dest":"198.18.0.2:443"}`
	recDenied  = `{"time":"2026-12-07T15:22:49.000000000Z","container":"web","protocol":"https","host":"evil.test","port":443,"method":"POST","path":"/upload","decision":"denied","reason":"evil.test:443 is not in io.gondolin.net.allow; To allow it, add it to the container annotation io.gondolin.net.allow (for example io.gondolin.net.allow=evil.test).","dest":"198.18.0.3:443"}`
	recTCP     = `{"time":"2026-12-07T15:22:50.000000000Z","container":"web","protocol":"tcp","host":"10.1.2.3","port":5432,"decision":"denied","reason":"internal address; to reach it, name it in io.gondolin.net.allow-internal","dest":"10.1.2.3:5432"}`
	recSupp    = `{"time":"2026-12-07T15:22:51.000000000Z","container":"web","protocol":"audit","decision":"suppressed","reason":"12 more records suppressed (3 of them denials) past limits.audit_lines_per_second = 100"}`
)

func write(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		if _, err := f.WriteString(l + "\n"); err != nil {
			t.Fatal(err)
		}
	}
}

func show(t *testing.T, o Options, table bool) (string, []Problem, error) {
	t.Helper()
	var out bytes.Buffer
	var w Writer = NewJSONWriter(&out)
	if table {
		w = NewTableWriter(&out, o.All)
	}
	var probs []Problem
	err := Show(context.Background(), o, w, func(p Problem) { probs = append(probs, p) })
	return out.String(), probs, err
}

func TestShowTable(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "default", "web.jsonl"), recDNS, recAllowed, recDenied, recTCP, recSupp)
	got, probs, err := show(t, Options{Dir: dir, Container: "web"}, true)
	if err != nil || len(probs) != 0 {
		t.Fatalf("%v %v", err, probs)
	}
	want := `TIME                      DECISION    PROTO  HOST            METHOD  PATH     RULE
2026-12-07T15:22:48.133Z  allowed     dns    api.x.test      A       -        synthetic answer
2026-12-07T15:22:48.200Z  allowed     https  api.x.test:443  GET     /hello   host in io.gondolin.net.allow; secrets substituted
2026-12-07T15:22:49.000Z  denied      https  evil.test:443   POST    /upload  evil.test:443 is not in io.gondolin.net.allow; To allow it, add it to the container annotation io.gondolin.net.allow (for example io.gondolin.net.allow=evil.test).
2026-12-07T15:22:50.000Z  denied      tcp    10.1.2.3:5432   -       -        internal address; to reach it, name it in io.gondolin.net.allow-internal
2026-12-07T15:22:51.000Z  suppressed  audit  -               -       -        12 more records suppressed (3 of them denials) past limits.audit_lines_per_second = 100
`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}

	// --denied keeps denials and the summaries that may count some.
	got, _, _ = show(t, Options{Dir: dir, Container: "web", Filter: Filter{Denied: true}}, false)
	if got != recDenied+"\n"+recTCP+"\n"+recSupp+"\n" {
		t.Fatalf("--denied --json:\n%s", got)
	}

	// No records: the header alone.
	write(t, filepath.Join(dir, "default", "quiet.jsonl"))
	got, _, _ = show(t, Options{Dir: dir, Container: "quiet"}, true)
	if got != "TIME  DECISION  PROTO  HOST  METHOD  PATH  RULE\n" {
		t.Fatalf("empty table: %q", got)
	}
}

// The rotated file comes first; a rotation between opening the two files
// does not show a file twice.
func TestShowRotated(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "k8s.io", "web.jsonl")
	write(t, live+".1", recDNS, recAllowed)
	write(t, live, recDenied)
	got, _, err := show(t, Options{Dir: dir, Container: "web"}, false)
	if err != nil || got != recDNS+"\n"+recAllowed+"\n"+recDenied+"\n" {
		t.Fatalf("%v\n%s", err, got)
	}
	// Only the rotated file (between the rename and the new file).
	os.Remove(live)
	got, _, err = show(t, Options{Dir: dir, Container: "web"}, false)
	if err != nil || got != recDNS+"\n"+recAllowed+"\n" {
		t.Fatalf("%v\n%s", err, got)
	}
	// Both names on one file: read once.
	os.Remove(live + ".1")
	write(t, live, recDNS)
	if err := os.Link(live, live+".1"); err != nil {
		t.Fatal(err)
	}
	got, _, err = show(t, Options{Dir: dir, Container: "web"}, false)
	if err != nil || got != recDNS+"\n" {
		t.Fatalf("%v\n%s", err, got)
	}
}

// --all merges the containers' records by time and names the container.
func TestShowAll(t *testing.T) {
	dir := t.TempDir()
	id := "16d74f5ef381d1929283a766e5a4647c30094f61c117b9349a878102ab36d965"
	write(t, filepath.Join(dir, "default", "web.jsonl"), recDNS, recDenied)
	write(t, filepath.Join(dir, "moby", id+".jsonl"), recAllowed, recTCP)
	got, _, err := show(t, Options{Dir: dir, All: true}, true)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, l := range strings.Split(strings.TrimSpace(got), "\n")[1:] {
		order = append(order, strings.Fields(l)[1])
	}
	if strings.Join(order, " ") != "default/web moby/16d74f5ef381 default/web moby/16d74f5ef381" || !strings.HasPrefix(got, "TIME                      CONTAINER          DECISION") {
		t.Fatalf("got\n%s", got)
	}
	got, _, _ = show(t, Options{Dir: dir, All: true, Namespace: "moby"}, false)
	if got != recAllowed+"\n"+recTCP+"\n" {
		t.Fatalf("--namespace moby --all:\n%s", got)
	}
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"default/web.jsonl", "default/web2.jsonl", "moby/abc123.jsonl", "moby/abd456.jsonl.1", "k8s.io/web.jsonl"} {
		write(t, filepath.Join(dir, p), recDNS)
	}
	for _, tc := range []struct{ ns, id, want, err string }{
		{"", "abc", "moby/abc123", ""},
		{"", "abd456", "moby/abd456", ""},
		{"default", "web", "default/web", ""},
		{"", "web", "", "matches 2 containers"},
		{"default", "we", "", "matches 2 containers"},
		{"", "zzz", "", "no audit file for container zzz"},
		{"", "../x", "", "expected a container ID"},
		{"nope", "web", "", "namespace nope has no audit files"},
	} {
		s, err := Find(dir, tc.ns, tc.id)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Find(%q, %q): %v, want an error saying %q", tc.ns, tc.id, err, tc.err)
			}
			continue
		}
		if err != nil || s.Name() != tc.want {
			t.Errorf("Find(%q, %q) = %s, %v, want %s", tc.ns, tc.id, s.Name(), err, tc.want)
		}
	}
	if _, err := Find(filepath.Join(dir, "absent"), "", "web"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("absent directory: %v", err)
	}
}

// Lines that are not records are reported with their place and skipped;
// the rest is shown.
func TestShowProblems(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "default", "web.jsonl")
	write(t, path, recDNS, "not json", strings.Repeat("x", maxLine+10), `{"a":1}`, recDenied)
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(recTCP[:40])
	f.Close()
	got, probs, err := show(t, Options{Dir: dir, Container: "web"}, false)
	if err != nil || got != recDNS+"\n"+recDenied+"\n" {
		t.Fatalf("%v\n%s", err, got)
	}
	var msgs []string
	for _, p := range probs {
		msgs = append(msgs, p.Error())
	}
	joined := strings.Join(msgs, "\n")
	for _, want := range []string{path + ":2: invalid character", path + ":3: longer than 64 KiB", path + ":4: no time or decision", path + ":6: the last line has no newline"} {
		if !strings.Contains(joined, want) {
			t.Errorf("problems lack %q:\n%s", want, joined)
		}
	}
	if len(probs) != 4 {
		t.Errorf("%d problems:\n%s", len(probs), joined)
	}
}

// Terminal control sequences and bidi controls from the guest are shown
// escaped.
func TestTableEscapes(t *testing.T) {
	dir := t.TempDir()
	rec := `{"time":"2026-12-07T15:22:48Z","protocol":"http","host":"a.test","method":"GET","path":"/\u001b[2J\u202egnp.exe\u0007","decision":"denied","reason":"x\ny"}`
	write(t, filepath.Join(dir, "default", "web.jsonl"), rec)
	got, _, err := show(t, Options{Dir: dir, Container: "web"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(got[:len(got)-1], "\x1b\u202e\a") || strings.Count(got, "\n") != 2 ||
		!strings.Contains(got, `/\x1b[2J\u202egnp.exe\x07`) || !strings.Contains(got, `x\x0ay`) {
		t.Fatalf("got %q", got)
	}
}

func TestShortCellsAreCut(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("a", 100)
	rec := `{"time":"2026-12-07T15:22:48Z","protocol":"http","host":"a.test","method":"GET","path":"/` + long + `","decision":"allowed","reason":"r"}`
	write(t, filepath.Join(dir, "default", "web.jsonl"), rec)
	got, _, _ := show(t, Options{Dir: dir, Container: "web"}, true)
	if !strings.Contains(got, "/"+strings.Repeat("a", colPath.max-2)+"…  r\n") {
		t.Fatalf("got\n%s", got)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, out *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output never showed %q:\n%s", want, out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// --follow shows what is there, then new records as they are written,
// across a rotation and (with --all) from a container that starts later;
// a record written in two parts is shown once whole.
func TestFollow(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "default", "web.jsonl")
	write(t, live, recDNS)
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan error, 1)
	var probs []Problem
	go func() {
		done <- Show(ctx, Options{Dir: dir, All: true, Follow: true, Poll: 5 * time.Millisecond}, NewJSONWriter(out), func(p Problem) { probs = append(probs, p) })
	}()
	waitFor(t, out, recDNS)

	f, _ := os.OpenFile(live, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(recAllowed[:50])
	time.Sleep(30 * time.Millisecond)
	f.WriteString(recAllowed[50:] + "\n")
	f.Close()
	waitFor(t, out, recAllowed)

	// The shim's rotation: a last record into the old file, rename, new file.
	write(t, live, recDenied)
	if err := os.Rename(live, live+".1"); err != nil {
		t.Fatal(err)
	}
	write(t, live, recTCP)
	waitFor(t, out, recTCP)

	write(t, filepath.Join(dir, "moby", "late.jsonl"), recSupp)
	waitFor(t, out, recSupp)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), recDNS+"\n"+recAllowed+"\n"+recDenied+"\n"+recTCP+"\n"+recSupp+"\n"; got != want || len(probs) != 0 {
		t.Fatalf("got\n%s\nwant\n%s\nproblems %v", got, want, probs)
	}
}
