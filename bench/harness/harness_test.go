package harness

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/earendil-works/gondolin-containerd/bench/report"
)

func TestParsePSS(t *testing.T) {
	text := "55d0c6a5f000-7ffc2b5fe000 ---p 00000000 00:00 0                          [rollup]\n" +
		"Rss:               18432 kB\nPss:                9123 kB\nPss_Dirty:  100 kB\nPss_Anon:           4000 kB\nPss_File:  3000 kB\nPss_Shmem:  2123 kB\n"
	if got, err := parsePSS(text); err != nil || got != (pss{total: 9123, anon: 4000, file: 3000, shmem: 2123}) {
		t.Errorf("parsePSS = %+v, %v; want 9123 = 4000 anon + 3000 file + 2123 shmem", got, err)
	}
	if got, err := parsePSS("Pss: 7 kB\n"); err != nil || got.total != 7 {
		t.Errorf("parsePSS without the split = %+v, %v", got, err)
	}
	if _, err := parsePSS("Rss: 1 kB\n"); err == nil {
		t.Error("parsePSS without a Pss line must fail")
	}
}

func TestParseStatPPID(t *testing.T) {
	for text, want := range map[string]int{
		"123 (sleep) S 45 123 123 0 -1":            45,
		"7 (qemu-system-x86) S 1 7 7 0":            1,
		"9 (a) b (c)) R 8 9 9 0 -1 4194560 100 0 ": 8,
	} {
		if got, err := parseStatPPID(text); err != nil || got != want {
			t.Errorf("parseStatPPID(%q) = %d, %v; want %d", text, got, err, want)
		}
	}
	if _, err := parseStatPPID("garbage"); err == nil {
		t.Error("malformed stat must fail")
	}
}

func TestArgValue(t *testing.T) {
	args := []string{"containerd-shim-runc-v2", "-namespace", "ns", "-id", "c1", "-address", "/run/x.sock"}
	if argValue(args, "-id") != "c1" || argValue(args, "-address") != "/run/x.sock" || argValue(args, "-debug") != "" {
		t.Errorf("argValue on %v", args)
	}
}

func TestParseJIT(t *testing.T) {
	// QEMU's TCG code buffer (anonymous rwx), its binary's text (file,
	// r-x), the heap (named, rw-) and an anonymous rw- mapping.
	text := `55a13c592000-55a13d17e000 r-xp 00000000 08:01 123 /usr/bin/qemu-system-x86_64
Size:               6500 kB
Pss:                3100 kB
55a16e746000-55a16eee9000 rw-p 00000000 00:00 0 [heap]
Pss:                4700 kB
7fbf70000000-7fbf73fff000 rwxp 00000000 00:00 0
Size:              65532 kB
Pss:               36000 kB
Pss_Anon:          36000 kB
VmFlags: rd wr ex mr mw me ac
7fbf40000000-7fbf403c2000 rw-p 00000000 00:00 0
Pss:                3700 kB
`
	if got, err := parseJIT(text); err != nil || got != 36000 {
		t.Errorf("parseJIT = %d, %v; want 36000 (the rwx anonymous mapping only)", got, err)
	}
}

func TestDescribeProcs(t *testing.T) {
	procs := []Proc{{PID: 1, Name: "qemu", PSSKiB: 2048, AnonKiB: 1024, FileKiB: 512, ShmemKiB: 512, JITKiB: 256}, {PID: 2, Name: "shim", PSSKiB: 1024},
		{PID: 3, Name: "virtiofsd", PSSKiB: 512, AnonKiB: 512}, {PID: 4, Name: "virtiofsd", PSSKiB: 512, AnonKiB: 512}}
	if got := SumPSS(procs); got != 4 {
		t.Errorf("SumPSS = %v MiB, want 4", got)
	}
	if got := SumJIT(procs); got != 0.25 {
		t.Errorf("SumJIT = %v MiB, want 0.25", got)
	}
	want := "qemu 2.0 MiB [anon 1.0 (of it executable 0.2), file 0.5, shmem 0.5], shim 1.0 MiB, virtiofsd 1.0 MiB (2 processes) [anon 1.0, file 0.0, shmem 0.0]"
	if got := DescribeProcs(procs); got != want {
		t.Errorf("DescribeProcs = %q, want %q", got, want)
	}
}

func TestLogField(t *testing.T) {
	line := `time="2026-11-27T00:26:14Z" level=info msg="accelerator chosen" accel=tcg reason="the CPU advertises neither vmx nor svm (nested \"virt\" is off)" runtime=io.containerd.gondolin.v1`
	if got := logField(line, "accel"); got != "tcg" {
		t.Errorf("accel = %q", got)
	}
	if got := logField(line, "reason"); got != `the CPU advertises neither vmx nor svm (nested "virt" is off)` {
		t.Errorf("reason = %q", got)
	}
	if got := logField(line, "missing"); got != "" {
		t.Errorf("missing = %q", got)
	}
	path := filepath.Join(t.TempDir(), "containerd.log")
	log := "level=info msg=other\n" + line + "\n" + strings.Replace(line, "accel=tcg", "accel=kvm", 1) + "\n"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	if acc, _ := GondolinAccelerator(path); acc != "KVM" {
		t.Errorf("GondolinAccelerator = %q, want the last one, KVM", acc)
	}
	// Today's line.
	now := `time="2026-12-07T15:54:17Z" level=info msg="VM setup chosen" accel=tcg reason="the CPU advertises neither vmx nor svm" runtime=io.containerd.gondolin.v1 vmm=qemu`
	if err := os.WriteFile(path, []byte(log+now+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if acc, reason := GondolinAccelerator(path); acc != "TCG" || reason != "the CPU advertises neither vmx nor svm" {
		t.Errorf("GondolinAccelerator = %q, %q, want TCG from the VM setup line", acc, reason)
	}
}

func TestRotate(t *testing.T) {
	xs := []string{"a", "b", "c"}
	for i, want := range [][]string{{"a", "b", "c"}, {"b", "c", "a"}, {"c", "a", "b"}, {"a", "b", "c"}} {
		if got := rotate(xs, i); !reflect.DeepEqual(got, want) {
			t.Errorf("rotate(%d) = %v, want %v", i, got, want)
		}
	}
	if !reflect.DeepEqual(xs, []string{"a", "b", "c"}) {
		t.Error("rotate changed its input")
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{1 << 30: "1 GiB", 512 << 20: "512 MiB", 64 << 10: "64 KiB", 100: "100 B", 3<<30 + 1<<20: "3073 MiB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func lines(spec ...any) []Line {
	var out []Line
	for i := 0; i < len(spec); i += 2 {
		out = append(out, Line{At: spec[i].(time.Duration), Text: spec[i+1].(string)})
	}
	return out
}

func TestIOFigures(t *testing.T) {
	s := time.Second
	res := &RunResult{Lines: lines(
		1*s, "@@go", 3*s, "@@read", 7*s, "@@write", 8*s, "@@tree",
		10*s, "@@untar", 10*s+500*time.Millisecond, "@@find 2101", 12*s, "@@rm")}
	got, err := ioFigures(res, 512<<20, 2101)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{256, 128, 2, 0.5, 1.5}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ioFigures = %v, want %v", got, want)
	}
	if _, err := ioFigures(res, 512<<20, 10101); err == nil || !strings.Contains(err.Error(), "want 10101") {
		t.Errorf("wrong find count must fail, got %v", err)
	}
	res.Lines = res.Lines[:3]
	if _, err := ioFigures(res, 512<<20, 2101); err == nil || !strings.Contains(err.Error(), "@@tree") {
		t.Errorf("a missing marker must be named, got %v", err)
	}
}

func TestTreeFigures(t *testing.T) {
	s := time.Second
	res := &RunResult{Lines: lines(
		1*s, "@@tree", 4*s, "@@untar", 4*s+250*time.Millisecond, "@@find 2101", 5*s, "@@rm")}
	got, err := treeFigures(res, 2101)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float64{3, 0.25, 0.75}; !reflect.DeepEqual(got, want) {
		t.Errorf("treeFigures = %v, want %v", got, want)
	}
	if _, err := treeFigures(res, 10101); err == nil || !strings.Contains(err.Error(), "want 10101") {
		t.Errorf("wrong find count must fail, got %v", err)
	}
	res.Lines = res.Lines[:2]
	if _, err := treeFigures(res, 2101); err == nil || !strings.Contains(err.Error(), "@@find") {
		t.Errorf("a missing marker must be named, got %v", err)
	}
	// The file jobs' script ends with the same tree part, in the same
	// order, so both read the tree's figures alike.
	if !strings.HasSuffix(ioScript, treeScript) || !strings.HasSuffix(tmpfsScript, treeScript) {
		t.Error("ioScript and tmpfsScript must end with treeScript")
	}
}

func TestPipeFigure(t *testing.T) {
	res := &RunResult{Lines: lines(time.Second, "@@go", 3*time.Second, "@@done")}
	if v, err := pipeFigure(res, 256<<20); err != nil || v != 128 {
		t.Errorf("pipeFigure = %v, %v; want 128", v, err)
	}
	res.Lines = res.Lines[:1]
	if _, err := pipeFigure(res, 256<<20); err == nil || !strings.Contains(err.Error(), "@@done") {
		t.Errorf("a missing @@done must be named, got %v", err)
	}
	res.Lines = lines(time.Second, "@@go", time.Second, "@@done")
	if _, err := pipeFigure(res, 256<<20); err == nil {
		t.Error("a zero duration must fail")
	}
}

// TestRuncGoals: every gondolin runtime (not runc, not runsc) gets the
// stdio ratios to runc (≥ 50 %, the pipe's for information) and runc's
// tree times over its own (≥ 33 %, tmpfs for information), rendered so
// that "runc / gondolin ≥ 33 %" is met when gondolin is within 3x.
func TestRuncGoals(t *testing.T) {
	runtimes := []*Runtime{
		{Info: &report.Runtime{Name: "runc", RuntimeType: "io.containerd.runc.v2"}},
		{Info: &report.Runtime{Name: "runsc", RuntimeType: "io.containerd.runc.v2"}},
		{Info: &report.Runtime{Name: "gondolin", RuntimeType: GondolinRuntimeType}},
		{Info: &report.Runtime{Name: "gondolin-nopool", RuntimeType: GondolinRuntimeType}},
	}
	s := NewSession(Options{})
	s.runtimes = runtimes
	for _, rt := range runtimes {
		s.Results.Runtimes = append(s.Results.Runtimes, rt.Info)
	}
	samples := func(m *report.Metric, runc, gondolin, nopool float64) {
		m.Results["runc"].Samples = []float64{runc}
		m.Results["runsc"].Samples = []float64{runc}
		m.Results["gondolin"].Samples = []float64{gondolin}
		m.Results["gondolin-nopool"].Samples = []float64{nopool}
	}
	samples(s.metric("stdout_throughput", "stdio", "stdout throughput: …", "stdout throughput", "MiB/s", report.HigherIsBetter), 1000, 600, 400)
	samples(s.metric("pipe_throughput", "stdio", "in-container pipe: …", "in-container pipe", "MiB/s", report.HigherIsBetter), 2000, 500, 500)
	samples(s.metric("rootfs_untar", "rootfs", "rootfs: unpack …", "rootfs untar small files", "s", report.LowerIsBetter), 0.36, 1, 18)
	samples(s.metric("tmpfs_untar", "tmpfs", "tmpfs: unpack …", "tmpfs untar small files", "s", report.LowerIsBetter), 0.36, 18, 18)
	s.addGoals()
	s.Results.Finalize()

	type want struct {
		title string
		num   report.FigureRef
		value float64
		met   string // "met", "not met", "" (information)
	}
	var wants []want
	for _, rt := range []string{"gondolin", "gondolin-nopool"} {
		out, untar, met := 0.6, 0.36, "met"
		if rt == "gondolin-nopool" {
			out, untar, met = 0.4, 0.02, "not met"
		}
		wants = append(wants,
			want{rt + ": stdout throughput / runc's", report.FigureRef{Metric: "stdout_throughput", Runtime: rt}, out, met},
			want{rt + ": in-container pipe / runc's (no stdio transport: the floor for stdout and stdin)", report.FigureRef{Metric: "pipe_throughput", Runtime: rt}, 0.25, ""},
			want{rt + ": runc's time / " + rt + "'s, rootfs untar small files (within 3x of runc)", report.FigureRef{Metric: "rootfs_untar", Runtime: "runc"}, untar, met},
			want{rt + ": runc's time / " + rt + "'s, tmpfs untar small files (a tmpfs, no virtio-fs: the floor for the rootfs and bind-mount times)", report.FigureRef{Metric: "tmpfs_untar", Runtime: "runc"}, 0.02, ""},
		)
	}
	if len(s.Results.Goals) != len(wants) {
		for _, g := range s.Results.Goals {
			t.Logf("goal %q", g.Title)
		}
		t.Fatalf("%d goals, want %d (no runc or runsc goals, none for metrics not measured)", len(s.Results.Goals), len(wants))
	}
	for i, w := range wants {
		g := s.Results.Goals[i]
		if g.Title != w.title || g.Num != w.num {
			t.Errorf("goal %d: %q of %v, want %q of %v", i, g.Title, g.Num, w.title, w.num)
		}
		if g.Value == nil || math.Abs(*g.Value-w.value) > 1e-9 {
			t.Errorf("%s: value %v, want %v", g.Title, g.Value, w.value)
		}
		switch {
		case w.met == "" && g.Met != nil:
			t.Errorf("%s: a verdict %v for information", g.Title, *g.Met)
		case w.met != "" && (g.Met == nil || *g.Met != (w.met == "met")):
			t.Errorf("%s: met %v, want %s", g.Title, g.Met, w.met)
		}
	}
	md := s.Results.Markdown()
	for _, line := range []string{
		"- gondolin: runc's time / gondolin's, rootfs untar small files (within 3x of runc): **36 %** (goal ≥ 33 %: met) = rootfs untar small files, runc: 0.360 s / rootfs untar small files, gondolin: 1.00 s",
		"- gondolin-nopool: runc's time / gondolin-nopool's, rootfs untar small files (within 3x of runc): **2 %** (goal ≥ 33 %: not met) = ",
		"- gondolin: stdout throughput / runc's: **60 %** (goal ≥ 50 %: met) = stdout throughput, gondolin: 600 MiB/s / stdout throughput, runc: 1000 MiB/s",
		"- gondolin: in-container pipe / runc's (no stdio transport: the floor for stdout and stdin): **25 %** = ",
	} {
		if !strings.Contains(md, line) {
			t.Errorf("results.md lacks %q:\n%s", line, md)
		}
	}

	// Without runc in the session there is nothing to take a ratio to.
	s.Results.Goals = nil
	s.Results.Runtimes = s.Results.Runtimes[1:]
	s.addGoals()
	if len(s.Results.Goals) != 0 {
		t.Errorf("%d goals without runc in the session, want none", len(s.Results.Goals))
	}
}

func TestFetchFigure(t *testing.T) {
	l := lines(time.Second, "@@start", 3*time.Second, "@@done 268435456 1.9")
	if v, err := fetchFigure(l, "", 256<<20); err != nil || v != 128 {
		t.Errorf("fetchFigure = %v, %v; want 128", v, err)
	}
	if _, err := fetchFigure(l, "", 1<<20); err == nil {
		t.Error("a wrong byte count must fail")
	}
	if _, err := fetchFigure(l[:1], "bench-fetch: dial tcp: no route", 1); err == nil || !strings.Contains(err.Error(), "no route") {
		t.Errorf("a failed download must carry the error output, got %v", err)
	}
}

func TestTryPolicy(t *testing.T) {
	rt := &Runtime{Info: &report.Runtime{Name: "g"}}
	m := &report.Metric{Results: map[string]*report.Figure{"g": {}}}
	f := m.Results["g"]
	if !try(m, rt) {
		t.Fatal("a fresh figure must be tried")
	}
	f.Errors = []string{"e1"}
	if !try(m, rt) {
		t.Fatal("one failure is retried")
	}
	f.Errors = append(f.Errors, "e2")
	if try(m, rt) {
		t.Fatal("two failures without a success give the figure up")
	}
	f.Samples = []float64{1}
	if !try(m, rt) {
		t.Fatal("with a success, failures do not stop it")
	}
	m.Results["g"] = &report.Figure{Status: report.StatusAbsent}
	if try(m, rt) {
		t.Fatal("an absent runtime is never tried")
	}
}

func TestTree(t *testing.T) {
	var buf bytes.Buffer
	if err := MakeTree(&buf, 250); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	dirs, files := 0, 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			dirs++
		case tar.TypeReg:
			files++
			if h.Size < 64 || h.Size > 2048 {
				t.Errorf("%s has %d bytes", h.Name, h.Size)
			}
		}
	}
	if dirs != 100 || files != 250 {
		t.Errorf("tree has %d dirs and %d files, want 100 and 250", dirs, files)
	}
	if TreeEntries(250) != 1+100+250 || TreeEntries(10) != 1+10+10 {
		t.Error("TreeEntries")
	}
}

func TestBuildImage(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("no static busybox (make deps installs busybox-static)")
	}
	dir := t.TempDir()
	fetch := filepath.Join(dir, "bench-fetch")
	if err := os.WriteFile(fetch, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := ImageSpec{Busybox: "/bin/busybox", Fetch: fetch, FileBytes: 3 << 20, TreeFiles: 20}
	var buf bytes.Buffer
	if err := BuildImage(&buf, spec, dir); err != nil {
		t.Fatal(err)
	}
	blobs := map[string][]byte{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		blobs[h.Name] = b
	}
	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, blobs["index.json"])
	}
	name, _ := spec.Name()
	if got := index.Manifests[0].Annotations["io.containerd.image.name"]; got != name {
		t.Errorf("image name %q, want %q", got, name)
	}
	blob := func(d string) []byte { return blobs["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")] }
	var manifest struct {
		Config struct{ Digest string }
		Layers []struct {
			Digest string
			Size   int64
		}
	}
	if err := json.Unmarshal(blob(index.Manifests[0].Digest), &manifest); err != nil || len(manifest.Layers) != 2 {
		t.Fatalf("manifest: %v", err)
	}
	for _, l := range manifest.Layers {
		b := blob(l.Digest)
		if int64(len(b)) != l.Size || digestOf(b) != l.Digest {
			t.Errorf("layer %s: %d bytes, digest %s", l.Digest, len(b), digestOf(b))
		}
	}
	// The base layer has busybox, its applets, the tree and the scratch dir;
	// the second one the read file.
	names := map[string]*tar.Header{}
	for _, l := range manifest.Layers {
		tr := tar.NewReader(bytes.NewReader(blob(l.Digest)))
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			names[h.Name] = h
		}
	}
	for _, want := range []string{"bin/busybox", "bin/sh", "bin/bench-fetch", "bench/tree.tar", "scratch/", "bench/read.bin", "etc/passwd"} {
		if names[want] == nil {
			t.Errorf("image lacks %s", want)
		}
	}
	if h := names["bench/read.bin"]; h != nil && h.Size != 3<<20 {
		t.Errorf("read.bin has %d bytes", h.Size)
	}
	if h := names["bin/sh"]; h != nil && (h.Typeflag != tar.TypeSymlink || h.Linkname != "/bin/busybox") {
		t.Errorf("bin/sh: %+v", h)
	}
	// The name follows the content.
	other := spec
	other.TreeFiles++
	if n2, _ := other.Name(); n2 == name {
		t.Error("image name does not change with the tree size")
	}
}

// The baseline runtimes need a baseline build; without one they are
// reported absent with what to run, before anything is started.
func TestBaselineRuntimeNeedsABuild(t *testing.T) {
	s := &Session{Opts: Options{RuntimeDir: t.TempDir(), WorkDir: t.TempDir(), Tools: t.TempDir()}}
	for _, name := range []string{"gondolin-base", "gondolin-snapshot-base"} {
		rt := s.setupRuntime(context.Background(), name)
		if !strings.Contains(rt.Info.Absent, "BENCH_BASELINE=") {
			t.Errorf("%s without a baseline: Absent = %q", name, rt.Info.Absent)
		}
	}
	if !isBaseline("gondolin-snapshot-base") || isBaseline("gondolin-snapshot") || isBaseline("gondolin") {
		t.Error("isBaseline names the wrong runtimes")
	}
}

func TestGondolinNetAnnotations(t *testing.T) {
	srv := &HTTPSServer{IP: net.IPv4(192, 0, 2, 2).To4(), Port: 8443, HTTPPort: 8080}
	for kind, want := range map[DownloadKind]string{
		DownloadHTTPS:      "io.gondolin.net.allow=192.0.2.2:8443",
		DownloadHTTPSRelay: "io.gondolin.net.tcp-allow=192.0.2.2:8443",
		DownloadHTTP:       "io.gondolin.net.allow=192.0.2.2:8080",
	} {
		got := GondolinNetAnnotations(srv, kind)
		if len(got) != 4 || got[0] != "--annotation" || got[1] != want || got[2] != "--annotation" || got[3] != "io.gondolin.net.allow-internal=192.0.2.2" {
			t.Errorf("%s: %q, want %s and allow-internal of the server", kind, got, want)
		}
	}
	if srv.URL(5) != "https://192.0.2.2:8443/bytes?n=5" || srv.HTTPURL(5) != "http://192.0.2.2:8080/bytes?n=5" {
		t.Errorf("URLs: %s %s", srv.URL(5), srv.HTTPURL(5))
	}
}

func TestBenchServerServesBothSchemes(t *testing.T) {
	srv, err := StartHTTPSServer(net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(srv.CertPEM) {
		t.Fatal("the server's CertPEM does not parse")
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, url := range []string{srv.URL(300 << 10), srv.HTTPURL(300 << 10)} {
		resp, err := c.Get(url)
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != 300<<10 {
			t.Errorf("%s: %d bytes, %v", url, n, err)
		}
	}
}
