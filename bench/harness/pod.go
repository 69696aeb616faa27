package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/earendil-works/gondolin-containerd/bench/report"
)

// The pod workload: Kubernetes-style pods through the bench containerd's CRI
// plugin, driven by crictl as a kubelet would drive CRI. On gondolin a pod is
// one VM (the sandbox boots it, its containers join it); on runc a pod is a
// pause process and a process per container under one shim.

const (
	podGroup = "pods (CRI: crictl against the bench containerd)"
	// criTimeout bounds one crictl call; runp boots a pod's VM (TCG).
	criTimeout = 3 * time.Minute
	// podReadyTimeout bounds the wait for the first exec to succeed, and
	// for the second container's first log line.
	podReadyTimeout = 2 * time.Minute
	// podFirstLine is what the second container prints first.
	podFirstLine = "@@first"
	// criNamespaceContainer is CRI's NamespaceMode CONTAINER: a PID
	// namespace of the container's own, the Kubernetes default
	// (shareProcessNamespace false); 0 (POD) would share the pod's.
	criNamespaceContainer = 1
	// criNamespace is the containerd namespace of the CRI plugin's
	// containers (its default, which the bench containerd keeps).
	criNamespace = "k8s.io"
)

// podMetrics are the figures of the pod workload.
type podMetrics struct {
	ready, runp, second, mem, singles *report.Metric
}

func (m podMetrics) all() []*report.Metric {
	return []*report.Metric{m.ready, m.runp, m.second, m.mem, m.singles}
}

// podConfig is the PodSandboxConfig of a bench pod: what the kubelet sends
// for a pod without volumes, ports or limits, its containers' logs under
// logDir.
func podConfig(name, logDir string) map[string]any {
	return map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "gondolin-bench", "uid": name, "attempt": 0},
		"hostname":      name,
		"log_directory": logDir,
		"linux": map[string]any{"security_context": map[string]any{
			"namespace_options": map[string]any{"pid": criNamespaceContainer},
		}},
	}
}

// podContainerConfig is the ContainerConfig of a bench pod's container:
// image running command, its CRI log at logDir/name.log.
func podContainerConfig(name, image string, command []string) map[string]any {
	return map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": image},
		"command":  command,
		"log_path": name + ".log",
		"linux":    map[string]any{},
	}
}

func writeJSONFile(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// podRuntimes returns the session's runtimes that can run the pod
// workload: those with a CRI handler that runs what their ctr flags run.
// The others' figures are marked (skipped, or the error that rules them
// out).
func (s *Session) podRuntimes(ctx context.Context, m podMetrics) ([]*Runtime, error) {
	if _, err := s.Crictl.Output(ctx, time.Minute, "inspecti", s.Opts.PodImage); err != nil {
		return nil, fmt.Errorf("the pods' image %s is not in the bench containerd's CRI namespace (hack/bench.sh imports it when BENCH_WORKLOADS has pod): %w", s.Opts.PodImage, err)
	}
	info, err := s.Crictl.Output(ctx, time.Minute, "info")
	if err != nil {
		return nil, fmt.Errorf("the bench containerd's CRI plugin does not answer: %w", err)
	}
	handlers, err := criRuntimes([]byte(info))
	if err != nil {
		return nil, err
	}
	var out []*Runtime
	for _, rt := range s.runtimes {
		if rt.CRIHandler == "" {
			for _, mm := range m.all() {
				f := mm.Results[rt.Name()]
				f.Status = report.StatusSkipped
				f.Note = rt.NoCRI
			}
			continue
		}
		want, err := criWantFromRunFlags(rt.RunFlags)
		if err == nil {
			err = checkCRIHandler(handlers, rt.CRIHandler, want)
		}
		if err != nil {
			s.record(rt, m.all(), nil, err)
			continue
		}
		out = append(out, rt)
	}
	return out, nil
}

func (s *Session) workPod(ctx context.Context) error {
	m := podMetrics{
		ready: s.metric("pod_ready", podGroup, "pod start to exec: crictl runp, create and start of a `sleep` container, first successful `crictl exec … true`",
			"pod start → exec", "s", report.LowerIsBetter),
		runp: s.metric("pod_runp", podGroup, "… of it, crictl runp alone (the sandbox; gondolin: boots the pod's VM)",
			"pod runp", "s", report.LowerIsBetter),
		second: s.metric("pod_second_first_line", podGroup, "a second container in the running pod: crictl create and start to its first line in its CRI log",
			"pod: 2nd container → first line", "s", report.LowerIsBetter),
		mem: s.metric("pod_mem_pod2", podGroup, "host memory (PSS) of one idle pod with two `sleep` containers: the pod's shim and every process below it",
			"memory, idle pod of 2", "MiB", report.LowerIsBetter),
		singles: s.metric("pod_mem_single2", podGroup, "host memory (PSS) of two idle single containers (`ctr run -d` sleep, gondolin: two VMs and the VM pool serving its config), total",
			"memory, 2 idle single containers", "MiB", report.LowerIsBetter),
	}
	rts, err := s.podRuntimes(ctx, m)
	if err != nil {
		return err
	}
	for i := 0; i < s.Opts.Runs; i++ {
		mem := i < s.Opts.IORuns
		for _, rt := range rotate(rts, i) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !try(m.ready, rt) {
				continue
			}
			s.podOnce(ctx, rt, i, mem, m)
		}
		if !mem {
			continue
		}
		for _, rt := range rotate(rts, i) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !try(m.singles, rt) {
				continue
			}
			v, _, desc, err := s.idleMemory(ctx, rt, 2, i)
			s.record(rt, []*report.Metric{m.singles}, []float64{v}, err)
			if err == nil {
				m.singles.Results[rt.Name()].Note = desc
			}
		}
	}
	return nil
}

// podOnce runs one pod on rt and records its figures: start to exec, runp,
// the second container's first line and, with mem, the idle pod's memory.
func (s *Session) podOnce(ctx context.Context, rt *Runtime, i int, mem bool, m podMetrics) {
	name := s.newID(rt.Name(), "pod", i)
	dir := filepath.Join(s.Opts.WorkDir, "pods", name)
	logDir := filepath.Join(dir, "logs")
	podCfg, c1Cfg, c2Cfg := filepath.Join(dir, "pod.json"), filepath.Join(dir, "sleep.json"), filepath.Join(dir, "second.json")
	// Everything after a failure depends on what failed: the later
	// figures get its error too.
	later := []*report.Metric{m.second}
	if mem {
		later = append(later, m.mem)
	}
	fail := func(ms []*report.Metric, err error) {
		s.record(rt, append(ms, later...), nil, err)
	}
	err := os.MkdirAll(dir, 0o755)
	if err == nil {
		err = writeJSONFile(podCfg, podConfig(name, logDir))
	}
	if err == nil {
		err = writeJSONFile(c1Cfg, podContainerConfig("sleep", s.Opts.PodImage, []string{"sleep", "1000000"}))
	}
	if err == nil {
		err = writeJSONFile(c2Cfg, podContainerConfig("second", s.Opts.PodImage, []string{"sh", "-c", "echo " + podFirstLine + "; exec sleep 1000000"}))
	}
	if err != nil {
		fail([]*report.Metric{m.ready, m.runp}, fmt.Errorf("writing the pod's configs: %w", err))
		return
	}
	defer os.RemoveAll(dir)

	start := time.Now()
	pod, err := s.Crictl.Output(ctx, criTimeout, "runp", "--runtime", rt.CRIHandler, podCfg)
	runp := time.Since(start)
	if err != nil {
		fail([]*report.Metric{m.ready, m.runp}, err)
		// runp may have left a sandbox behind (e.g. on a timeout).
		s.removePods(rt, name)
		return
	}
	defer s.removePod(rt, pod)
	s.record(rt, []*report.Metric{m.runp}, []float64{runp.Seconds()}, nil)

	c1, err := s.Crictl.Output(ctx, criTimeout, "create", pod, c1Cfg, podCfg)
	if err == nil {
		_, err = s.Crictl.Output(ctx, criTimeout, "start", c1)
	}
	if err == nil {
		err = s.firstExec(ctx, c1)
	}
	ready := time.Since(start)
	if err != nil {
		fail([]*report.Metric{m.ready}, err)
		return
	}
	s.record(rt, []*report.Metric{m.ready}, []float64{ready.Seconds()}, nil)

	start = time.Now()
	c2, err := s.Crictl.Output(ctx, criTimeout, "create", pod, c2Cfg, podCfg)
	if err == nil {
		_, err = s.Crictl.Output(ctx, criTimeout, "start", c2)
	}
	if err == nil {
		err = waitFirstLogLine(ctx, filepath.Join(logDir, "second.log"), podFirstLine, podReadyTimeout)
	}
	second := time.Since(start)
	s.record(rt, []*report.Metric{m.second}, []float64{second.Seconds()}, err)
	if err != nil || !mem {
		if mem {
			s.record(rt, []*report.Metric{m.mem}, nil, fmt.Errorf("the pod's second container did not start: %w", err))
		}
		return
	}

	select {
	case <-time.After(s.Opts.Settle):
	case <-ctx.Done():
		return
	}
	// The pod's shim has the sandbox's id; runc's pause and container
	// processes, gondolin's QEMU and virtiofsd are below it. A pod's VM
	// never comes from the VM pool (the shim takes pool VMs for single
	// containers only), so no pool is counted here.
	procs, err := ContainerProcs(s.Opts.Address, criNamespace, pod, rt.Gondolin())
	var v float64
	if err == nil {
		v = SumPSS(procs)
	}
	s.record(rt, []*report.Metric{m.mem}, []float64{v}, err)
	if err == nil {
		m.mem.Results[rt.Name()].Note = DescribeProcs(procs)
	}
}

// firstExec runs `crictl exec ID true` until it succeeds: the pod answers
// exec. It gives up after podReadyTimeout with the last error.
func (s *Session) firstExec(ctx context.Context, id string) error {
	deadline := time.Now().Add(podReadyTimeout)
	for n := 1; ; n++ {
		_, err := s.Crictl.Output(ctx, time.Minute, "exec", id, "true")
		if err == nil {
			if n > 1 {
				s.logf("  exec into %s succeeded at attempt %d", id, n)
			}
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("no exec succeeded within %s (%d attempts): %w", podReadyTimeout, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFirstLogLine polls a CRI log file until its first line is complete
// and checks it is want.
func waitFirstLogLine(ctx context.Context, path, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		line, ok, err := firstCRILogLine(string(b))
		if err != nil {
			return err
		}
		if ok {
			if line != want {
				return fmt.Errorf("the container's first log line is %q, want %q", line, want)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no line in %s within %s (it holds %q)", path, timeout, tail(string(b), 3, 300))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// removePod stops and removes pod sandbox id with its containers. A pod
// left behind would be counted in the next pod's neighbourhood (memory,
// CPU): it is logged and noted.
func (s *Session) removePod(rt *Runtime, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*criTimeout)
	defer cancel()
	if _, err := s.Crictl.Output(ctx, criTimeout, "rmp", "--force", id); err != nil {
		s.logf("  %-9s warning: removing pod %s: %v", rt.Name(), id, err)
		s.Results.Notes = append(s.Results.Notes, fmt.Sprintf("%s: pod %s could not be removed: %v", rt.Name(), id, err))
	}
}

// removePods removes the pods named name (runp failed; its sandbox may exist).
func (s *Session) removePods(rt *Runtime, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), criTimeout)
	defer cancel()
	out, err := s.Crictl.Output(ctx, time.Minute, "pods", "--quiet", "--name", "^"+name+"$")
	if err != nil {
		s.logf("  %-9s warning: listing pods named %s: %v", rt.Name(), name, err)
		return
	}
	for _, id := range strings.Fields(out) {
		s.removePod(rt, id)
	}
}
