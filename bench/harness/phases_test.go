package harness

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/earendil-works/gondolin-containerd/bench/report"
)

func TestParseLogfmt(t *testing.T) {
	line := `time="2026-12-07T21:27:55.441879126Z" level=info msg="guest agent ready" agent=0.1.0 reason="a \"quoted\" word" parent= boot=snapshot`
	got, err := parseLogfmt(line)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"time": "2026-12-07T21:27:55.441879126Z", "level": "info", "msg": "guest agent ready",
		"agent": "0.1.0", "reason": `a "quoted" word`, "parent": "", "boot": "snapshot",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseLogfmt = %v, want %v", got, want)
	}
	for _, bad := range []string{
		`level=info msg="unterminated`,
		`level=info a bare word`,
		`=value`,
	} {
		if _, err := parseLogfmt(bad); err == nil {
			t.Errorf("parseLogfmt(%q) accepted it", bad)
		}
	}
}

// testdata/containerd-start.log is an excerpt of a bench containerd's log
// (containerd at debug level) from `BENCH_RUNS=3 BENCH_WORKLOADS=start
// BENCH_RUNTIMES=runc,gondolin hack/bench.sh`: gondolin's smoke run (its VM
// made the snapshot first), then the first run of each start figure under
// runc and gondolin.
func TestReadShimPhasesRecorded(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "containerd-start.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids := []string{"bench-gondolin-smoke-0-ee11", "bench-gondolin-true-0-9998", "bench-gondolin-echo-0-3a8a", "bench-runc-true-0-72a2", "bench-gondolin-true-9-ffff"}
	got, problems, err := ReadShimPhases(f, ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Errorf("problems: %v", problems)
	}
	if len(got) != len(ids) {
		t.Fatalf("%d results for %d ids", len(got), len(ids))
	}
	smoke := got["bench-gondolin-smoke-0-ee11"]
	wantVM := map[string]float64{"agent_info": 80, "channel": 2, "fs_start": 15, "restored": 12, "snapshot": 1485, "vmm_start": 69}
	if !reflect.DeepEqual(smoke.VM, wantVM) || smoke.Boot != "snapshot" || smoke.GuestReadyMs != nil {
		t.Errorf("smoke VM %v boot %q guest ready %v, want %v, snapshot", smoke.VM, smoke.Boot, smoke.GuestReadyMs, wantVM)
	}
	if smoke.Create["boot"] != 1667 || smoke.Create["guest_create"] != 277 || len(smoke.Missing) != 0 {
		t.Errorf("smoke create %v, missing %v", smoke.Create, smoke.Missing)
	}

	tr := got["bench-gondolin-true-0-9998"]
	wantCreate := map[string]float64{"binds": 0, "boot": 214, "guest_create": 294, "hooks": 0, "host_cgroup": 2, "netns": 1, "network": 5,
		"parse": 0, "pod_share": 0, "readonly_root": 0, "rootfs": 0, "seal": 0, "state": 0, "stdio": 0, "vm_setup": 2}
	if !reflect.DeepEqual(tr.Create, wantCreate) {
		t.Errorf("true-0 create %v, want %v", tr.Create, wantCreate)
	}
	if want := map[string]float64{"guest_start": 46, "hooks": 0, "network": 70}; !reflect.DeepEqual(tr.Start, want) {
		t.Errorf("true-0 start %v, want %v", tr.Start, want)
	}
	if want := map[string]float64{"agent_info": 95, "channel": 1, "fs_start": 19, "restored": 15, "snapshot": 0, "vmm_start": 82}; !reflect.DeepEqual(tr.VM, want) {
		t.Errorf("true-0 VM %v, want %v", tr.VM, want)
	}
	if echo := got["bench-gondolin-echo-0-3a8a"]; echo.VM["agent_info"] != 104 || echo.Create["boot"] != 207 || echo.Start["network"] != 54 || len(echo.Missing) != 0 {
		t.Errorf("echo-0: %+v", echo)
	}
	// runc's shim logs no phases; an id not in the log has none either.
	for _, id := range []string{"bench-runc-true-0-72a2", "bench-gondolin-true-9-ffff"} {
		p := got[id]
		if p.VM != nil || p.Create != nil || p.Start != nil || !reflect.DeepEqual(p.Missing, []string{missingCreated, missingStarted}) {
			t.Errorf("%s: %+v", id, p)
		}
	}
}

func TestReadShimPhasesAttribution(t *testing.T) {
	log := strings.Join([]string{
		// a: a VM from a pool (fields no list names), booted cold before.
		`time="t" level=debug msg="creating task" id=a runtime=io.containerd.gondolin.v1`,
		`time="t" level=info msg="guest agent ready" agent=0.1.0 agent_info_ms=40 boot=pool guest_ready_ms=350 pool_claim_ms=3 runtime=io.containerd.gondolin.v1`,
		`time="t" level=debug msg="container created" boot_ms=45 container=a guest_create_ms=100 runtime=io.containerd.gondolin.v1`,
		`time="t" level=debug msg="container started" container=a guest_start_ms=40 network_ms=1.5 runtime=io.containerd.gondolin.v1`,
		// b and x create at once: b's window holds two VM lines.
		`time="t" level=debug msg="creating task" id=b runtime=/abs/containerd-shim-gondolin-v1`,
		`time="t" level=debug msg="creating task" id=x runtime=io.containerd.gondolin.v1`,
		`time="t" level=info msg="guest agent ready" agent_info_ms=1 boot=cold`,
		`time="t" level=info msg="guest agent ready" agent_info_ms=2 boot=cold`,
		`time="t" level=debug msg="container created" boot_ms=9 container=b guest_create_ms=1`,
		`time="t" level=debug msg="container started" container=b guest_start_ms=1`,
		// c: no "creating task" (containerd at info level).
		`time="t" level=info msg="guest agent ready" agent_info_ms=3 boot=cold`,
		`time="t" level=debug msg="container created" boot_ms=9 container=c guest_create_ms=1`,
		// d: created, but no VM line in its window.
		`time="t" level=debug msg="creating task" id=d runtime=io.containerd.gondolin.v1`,
		`time="t" level=debug msg="container created" boot_ms=9 container=d guest_create_ms=1`,
		// e: a pod's member, no VM of its own.
		`time="t" level=debug msg="creating task" id=e runtime=io.containerd.gondolin.v1`,
		`time="t" level=debug msg="container created" container=e guest_create_ms=7`,
		// f: a malformed step.
		`time="t" level=debug msg="creating task" id=f runtime=io.containerd.gondolin.v1`,
		`time="t" level=debug msg="container created" boot_ms=soon container=f`,
		// The message as another field's value does not count.
		`time="t" level=warning msg="other" errmsg="container started" container=e`,
	}, "\n")
	got, problems, err := ReadShimPhases(strings.NewReader(log), []string{"a", "b", "c", "d", "e", "f"})
	if err != nil {
		t.Fatal(err)
	}
	a := got["a"]
	if want := map[string]float64{"agent_info": 40, "pool_claim": 3}; !reflect.DeepEqual(a.VM, want) || a.Boot != "pool" {
		t.Errorf("a: VM %v boot %q, want %v pool", a.VM, a.Boot, want)
	}
	if a.GuestReadyMs == nil || *a.GuestReadyMs != 350 {
		t.Errorf("a: guest ready %v, want 350 apart from the steps", a.GuestReadyMs)
	}
	if a.Start["network"] != 1.5 || len(a.Missing) != 0 {
		t.Errorf("a: start %v missing %v", a.Start, a.Missing)
	}
	if b := got["b"]; b.VM != nil || b.Create["boot"] != 9 || !reflect.DeepEqual(b.Missing, []string{ambiguousReady}) {
		t.Errorf("b: %+v, want no VM steps (ambiguous)", b)
	}
	if c := got["c"]; c.VM != nil || c.Create == nil || !reflect.DeepEqual(c.Missing, []string{missingTask, missingStarted}) {
		t.Errorf("c: %+v", c)
	}
	if d := got["d"]; d.VM != nil || !reflect.DeepEqual(d.Missing, []string{missingReady, missingStarted}) {
		t.Errorf("d: %+v", d)
	}
	if e := got["e"]; e.VM != nil || e.Create["guest_create"] != 7 || e.Start != nil || !reflect.DeepEqual(e.Missing, []string{missingStarted}) {
		t.Errorf("e: %+v, want a member's create and no VM", e)
	}
	if f := got["f"]; f.Create != nil {
		t.Errorf("f: %+v, want its malformed line left out", f)
	}
	if len(problems) != 1 || !strings.Contains(problems[0], `boot_ms="soon" is not a number`) || !strings.HasPrefix(problems[0], "line 18:") {
		t.Errorf("problems %q, want line 18's boot_ms", problems)
	}
}

// The phases land in the session's start runs, and so in the results.
func TestCollectStartPhases(t *testing.T) {
	s := NewSession(Options{ContainerdLog: filepath.Join("testdata", "containerd-start.log")})
	gondolin := &Runtime{Info: &report.Runtime{Name: "gondolin", RuntimeType: GondolinRuntimeType}}
	runc := &Runtime{Info: &report.Runtime{Name: "runc", RuntimeType: "io.containerd.runc.v2"}}
	m := &report.Metric{ID: "start_true"}
	s.addStartRun(gondolin, m, "bench-gondolin-true-0-9998", 0.835, nil)
	s.addStartRun(gondolin, m, "bench-gondolin-true-1-0000", 0, os.ErrDeadlineExceeded) // failed: no run
	s.addStartRun(runc, m, "bench-runc-true-0-72a2", 0.149, nil)                        // runc: no phases
	s.collectStartPhases()
	if len(s.Results.StartRuns) != 1 {
		t.Fatalf("start runs %+v, want gondolin's one", s.Results.StartRuns)
	}
	r := s.Results.StartRuns[0]
	if r.TotalMs != 835 || r.Create["boot"] != 214 || r.VM["vmm_start"] != 82 || r.Start["guest_start"] != 46 || r.Boot != "snapshot" {
		t.Errorf("run %+v", r)
	}

	s = NewSession(Options{ContainerdLog: filepath.Join(t.TempDir(), "absent.log")})
	s.addStartRun(gondolin, m, "x", 1, nil)
	s.collectStartPhases()
	if r := s.Results.StartRuns[0]; r.Create != nil || len(r.Missing) != 1 || !strings.Contains(r.Missing[0], "could not be read") {
		t.Errorf("run without a log: %+v", r)
	}
	if len(s.Results.Notes) != 1 {
		t.Errorf("notes %v", s.Results.Notes)
	}
}

// A "guest agent ready" line that names its container goes to it alone,
// however many creates are open.
func TestReadShimPhasesNamedReadyLine(t *testing.T) {
	log := strings.Join([]string{
		`time="t" level=debug msg="creating task" id=g runtime=io.containerd.gondolin.v1`,
		`time="t" level=debug msg="creating task" id=h runtime=io.containerd.gondolin.v1`,
		`time="t" level=info msg="guest agent ready" agent_info_ms=5 boot=pool container=h`,
		`time="t" level=info msg="guest agent ready" agent_info_ms=7 boot=snapshot container=g`,
		`time="t" level=info msg="guest agent ready" agent_info_ms=9 boot=snapshot container=gondolin-pool-warm-up`,
		`time="t" level=debug msg="container created" boot_ms=20 container=g guest_create_ms=1`,
		`time="t" level=debug msg="container started" container=g guest_start_ms=1`,
		`time="t" level=debug msg="container created" boot_ms=10 container=h guest_create_ms=1`,
		`time="t" level=debug msg="container started" container=h guest_start_ms=1`,
	}, "\n")
	got, _, err := ReadShimPhases(strings.NewReader(log), []string{"g", "h"})
	if err != nil {
		t.Fatal(err)
	}
	if g, h := got["g"], got["h"]; g.VM["agent_info"] != 7 || g.Boot != "snapshot" || h.VM["agent_info"] != 5 || h.Boot != "pool" || len(g.Missing)+len(h.Missing) != 0 {
		t.Errorf("g: %+v; h: %+v", g, h)
	}
}
