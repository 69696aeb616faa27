// Command gondolin-bench runs the same workloads under runc, gVisor's runsc
// and gondolin through ctr against one containerd, alternating the runtimes
// run by run, and writes results.json, results.md and results.png into the
// results folder. `make bench` (hack/bench.sh) starts the containerd, builds
// this and runs it; see `gondolin-bench -h` for the knobs.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/earendil-works/gondolin-containerd/bench/harness"
	"github.com/earendil-works/gondolin-containerd/bench/report"
)

// knob is a flag whose default comes from an environment variable, with a
// smaller default for quick runs.
type knob struct {
	name, env, usage string
	full, quick      string
	value            *string
}

func main() {
	os.Exit(run())
}

func run() int {
	knobs := []*knob{
		{name: "runs", env: "BENCH_RUNS", full: "10", quick: "3", usage: "samples per runtime of the start and exec figures"},
		{name: "io-runs", env: "BENCH_IO_RUNS", full: "3", quick: "1", usage: "samples per runtime of the stdio, file, download and memory figures"},
		{name: "stdio-mib", env: "BENCH_STDIO_MIB", full: "1024", quick: "64", usage: "MiB pushed through stdout and through stdin"},
		{name: "file-mib", env: "BENCH_FILE_MIB", full: "512", quick: "64", usage: "MiB of the sequential read/write file"},
		{name: "tree-files", env: "BENCH_TREE_FILES", full: "10000", quick: "2000", usage: "small files in the metadata job's tree"},
		{name: "download-mib", env: "BENCH_DOWNLOAD_MIB", full: "256", quick: "32", usage: "MiB of the HTTPS download"},
		{name: "idle", env: "BENCH_IDLE", full: "10", quick: "3", usage: "idle containers at once for the memory figure"},
		{name: "settle", env: "BENCH_SETTLE", full: "10s", quick: "3s", usage: "wait after starting idle containers before reading their memory"},
		{name: "runtimes", env: "BENCH_RUNTIMES", full: "runc,runsc,gondolin,gondolin-nopool", quick: "runc,runsc,gondolin", usage: "runtimes, in column order"},
		{name: "workloads", env: "BENCH_WORKLOADS", full: strings.Join(harness.AllWorkloads, ","), quick: strings.Join(harness.AllWorkloads, ","), usage: "workloads to run"},
	}
	quick := flag.Bool("quick", os.Getenv("BENCH_QUICK") == "1", "short smoke run: small sizes, few runs (env BENCH_QUICK=1); figures are not for comparison")
	for _, k := range knobs {
		k.value = flag.String(k.name, "", fmt.Sprintf("%s (env %s; default %s, quick %s)", k.usage, k.env, k.full, k.quick))
	}
	address := flag.String("address", "/run/gondolin-bench/containerd.sock", "containerd socket")
	namespace := flag.String("namespace", "gondolin-bench", "containerd namespace")
	root := flag.String("containerd-root", "", "containerd's root directory (to find the image's files in the snapshots)")
	clog := flag.String("containerd-log", "", "containerd's log (the gondolin shim logs its accelerator there)")
	tools := flag.String("tools", "", "directory with ctr, containerd, runc, runsc (.cache/tools/bin)")
	runtimeDir := flag.String("runtime-dir", "", "gondolin tree with bin/containerd-shim-gondolin-v1 and share/gondolin")
	gondolinFrom := flag.String("gondolin-from", "", "where the gondolin tree in --runtime-dir was copied from (for the report)")
	baselineDir := flag.String("baseline-dir", "", "a second gondolin tree (bin/, share/) for the runtimes gondolin-base and gondolin-snapshot-base (hack/bench.sh builds it from BENCH_BASELINE)")
	baselineRev := flag.String("baseline-rev", "", "the commit --baseline-dir was built from (for the report)")
	repo := flag.String("repo", ".", "repository root (for the commit)")
	out := flag.String("out", "", "results folder")
	workDir := flag.String("work-dir", "", "scratch space for large files (default: <repo>/.cache/bench/work)")
	busybox := flag.String("busybox", "/bin/busybox", "static busybox for the bench image")
	fetch := flag.String("fetch", "", "static bench-fetch binary (default: <out>/bench-fetch)")
	podImage := flag.String("pod-image", "docker.io/gondolin/busybox:latest", "the pod workload's container image, in the CRI namespace k8s.io (hack/bench.sh imports it)")
	printDir := flag.Bool("print-dir", true, "print the results folder as the last line")
	render := flag.String("render", "", "only re-render results.md and results.png of an existing results folder from its results.json")
	flag.Parse()
	if *render != "" {
		return rerender(*render)
	}

	for _, k := range knobs {
		if *k.value != "" {
			continue
		}
		if v := os.Getenv(k.env); v != "" {
			*k.value = v
		} else if *quick {
			*k.value = k.quick
		} else {
			*k.value = k.full
		}
	}
	get := func(name string) string {
		for _, k := range knobs {
			if k.name == name {
				return *k.value
			}
		}
		panic(name)
	}
	var bad []string
	num := func(name string) int {
		n, err := strconv.Atoi(get(name))
		if err != nil || n < 1 {
			bad = append(bad, fmt.Sprintf("--%s=%q is not a positive number", name, get(name)))
		}
		return n
	}
	settle, err := time.ParseDuration(get("settle"))
	if err != nil {
		bad = append(bad, fmt.Sprintf("--settle=%q is not a duration (10s)", get("settle")))
	}
	opts := harness.Options{
		Runs: num("runs"), IORuns: num("io-runs"),
		StdioBytes: int64(num("stdio-mib")) << 20, FileBytes: int64(num("file-mib")) << 20,
		DownloadBytes: int64(num("download-mib")) << 20, TreeFiles: num("tree-files"), IdleN: num("idle"),
		Settle: settle, Quick: *quick,
		Runtimes: split(get("runtimes")), Workloads: split(get("workloads")),
		Address: *address, Namespace: *namespace, ContainerdRoot: *root, ContainerdLog: *clog,
		Tools: *tools, RuntimeDir: *runtimeDir, GondolinFrom: *gondolinFrom,
		BaselineDir: *baselineDir, BaselineRev: *baselineRev, Repo: *repo, Out: *out, WorkDir: *workDir,
		Busybox: *busybox, Fetch: *fetch, PodImage: *podImage,
	}
	for _, w := range opts.Workloads {
		if !contains(harness.AllWorkloads, w) {
			bad = append(bad, fmt.Sprintf("unknown workload %q (%s)", w, strings.Join(harness.AllWorkloads, ", ")))
		}
	}
	for name, v := range map[string]string{"--out": opts.Out, "--tools": opts.Tools, "--runtime-dir": opts.RuntimeDir, "--containerd-root": opts.ContainerdRoot} {
		if v == "" {
			bad = append(bad, name+" is required (hack/bench.sh passes it)")
		}
	}
	if len(bad) > 0 {
		for _, b := range bad {
			fmt.Fprintln(os.Stderr, "gondolin-bench:", b)
		}
		return 2
	}
	if opts.WorkDir == "" {
		opts.WorkDir = filepath.Join(opts.Repo, ".cache", "bench", "work")
	}
	if opts.Fetch == "" {
		opts.Fetch = filepath.Join(opts.Out, "bench-fetch")
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "gondolin-bench:", err)
		return 1
	}
	logFile, err := os.Create(filepath.Join(opts.Out, "bench.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "gondolin-bench:", err)
		return 1
	}
	defer logFile.Close()
	var logMu sync.Mutex
	logw := io.MultiWriter(os.Stderr, logFile)
	opts.Log = func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(logw, "[bench %s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		opts.Log("interrupted: finishing the current step and writing what was measured (again to quit at once)")
		cancel()
		<-sigs
		os.Exit(130)
	}()

	opts.Log("results folder %s; runs %d, io-runs %d, quick %v", opts.Out, opts.Runs, opts.IORuns, opts.Quick)
	s := harness.NewSession(opts)
	rc := 0
	if err := s.Run(ctx); err != nil {
		opts.Log("error: %v", err)
		s.Results.Notes = append(s.Results.Notes, "session failed: "+err.Error())
		rc = 1
	}
	md, err := s.Finish()
	if err != nil {
		opts.Log("writing results: %v", err)
		rc = 1
	}
	fmt.Println(md)
	if ctx.Err() != nil && rc == 0 {
		rc = 130
	}
	if *printDir {
		fmt.Println("results:", opts.Out)
	}
	return rc
}

// rerender rewrites results.md and results.png from results.json.
func rerender(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err == nil {
		var r report.Results
		if err = json.Unmarshal(b, &r); err == nil {
			md := r.Markdown()
			if err = os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o644); err == nil {
				err = r.WriteChartFile(filepath.Join(dir, "results.png"))
			}
			fmt.Println(md)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gondolin-bench:", err)
		return 1
	}
	fmt.Println("results:", dir)
	return 0
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
