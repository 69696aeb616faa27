package harness

import (
	"bufio"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/earendil-works/gondolin-containerd/bench/report"
)

// Runtime is one runtime under test and how ctr selects it.
type Runtime struct {
	Info *report.Runtime
	// RunFlags select the runtime on `ctr run` (--runtime, --runc-binary, …).
	RunFlags []string
	// NetFlags are the extra `ctr run` flags for a download of kind from
	// srv.
	NetFlags func(srv *HTTPSServer, kind DownloadKind) ([]string, error)
	// Egress says the runtime puts an egress policy between the container
	// and the network (gondolin): only such runtimes have a relay-only
	// figure apart from the intercepted one.
	Egress bool
	// CRIHandler is the bench containerd's CRI runtime handler (crictl
	// runp --runtime) that runs this runtime's pods, of the same name; ""
	// when there is none, NoCRI saying why.
	CRIHandler string
	NoCRI      string
	// Shim is the gondolin shim binary containerd runs for it ("" for
	// the other runtimes): its VM pools run that binary.
	Shim string
}

// Name is the runtime's short name (runc, runsc, gondolin).
func (r *Runtime) Name() string { return r.Info.Name }

// GondolinRuntimeType is the containerd runtime of gondolin's shim.
const GondolinRuntimeType = "io.containerd.gondolin.v1"

// Gondolin says the runtime is a gondolin build: its containers' VM
// processes are recorded in their state files, and it may run a VM pool.
func (r *Runtime) Gondolin() bool { return r.Info.RuntimeType == GondolinRuntimeType }

// ConfigPath is the runtime config `ctr run` hands the shim ("" for none:
// gondolin's built-in config). A gondolin VM pool serves one config.
func (r *Runtime) ConfigPath() string {
	v, _ := flagValue(r.RunFlags, "runtime-config-path")
	return v
}

// LogsPhases says the runtime's shim logs the steps of a container's start
// into containerd's log (gondolin's does), for the start phases.
func (r *Runtime) LogsPhases() bool { return r.Gondolin() }

func hostNet(*HTTPSServer, DownloadKind) ([]string, error) { return []string{"--net-host"}, nil }

// RunscFlags are the runsc flags the bench uses. systrap is gVisor's default
// platform (no KVM needed); network=host lets a --net-host container reach the
// host (with a container network namespace it stays in that namespace).
var RunscFlags = []string{"--platform=systrap", "--network=host"}

// setupRuntime prepares the named runtime and checks that it runs a
// container (`ctr run --rm IMAGE true`, which also warms it up). A runtime
// that cannot run comes back with Info.Absent saying exactly why.
func (s *Session) setupRuntime(ctx context.Context, name string) *Runtime {
	var rt *Runtime
	switch name {
	case "runc":
		rt = s.setupRunc(ctx)
	case "runsc":
		rt = s.setupRunsc(ctx)
	case "gondolin", "gondolin-base":
		rt = s.setupGondolin(ctx, name, "")
	case "gondolin-nopool", "gondolin-nopool-base":
		// The built-in config without its VM pool: each create starts
		// (resumes) its own VM, as before the pool.
		rt = s.setupGondolin(ctx, name, "vm_pool_size = 0\n")
	case "gondolin-snapshot", "gondolin-snapshot-base":
		// snapshot_boot with QEMU 10 and the Rust virtiofsd, which
		// `make tools` puts into the tools directory.
		snapshots := filepath.Join(s.Opts.WorkDir, name+"-states")
		_ = os.RemoveAll(snapshots) // a snapshot of another build must not be measured
		rt = s.setupGondolin(ctx, name, fmt.Sprintf("qemu_path = %q\nvirtiofsd_path = %q\nsnapshot_boot = true\nsnapshot_dir = %q\n",
			filepath.Join(filepath.Dir(s.Opts.Tools), "qemu", "usr", "bin", "qemu-system-x86_64"),
			filepath.Join(s.Opts.Tools, "virtiofsd"), snapshots))
	default:
		return &Runtime{Info: &report.Runtime{Name: name, Absent: "unknown runtime (runc, runsc, gondolin, gondolin-nopool, gondolin-snapshot, and with a baseline build gondolin-base, gondolin-nopool-base, gondolin-snapshot-base)"}}
	}
	return rt
}

// isBaseline says whether the gondolin runtime name runs the baseline
// build (Options.BaselineDir).
func isBaseline(name string) bool { return strings.HasSuffix(name, "-base") }

// smoke runs `true` in a fresh container.
func (s *Session) smoke(ctx context.Context, rt *Runtime) error {
	_, err := s.Ctr.Run(ctx, RunSpec{ID: s.newID(rt.Name(), "smoke", 0), Runtime: rt, Image: s.Image, Args: []string{"true"}, Timeout: 3 * time.Minute})
	return err
}

func firstLine(cmd string, args ...string) string {
	out, err := exec.Command(cmd, args...).Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	l, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(l)
}

func (s *Session) setupRunc(ctx context.Context) *Runtime {
	bin := filepath.Join(s.Opts.Tools, "runc")
	rt := &Runtime{
		Info: &report.Runtime{Name: "runc", RuntimeType: "io.containerd.runc.v2", Accelerator: "native",
			How: "containerd-shim-runc-v2 with BinaryName " + bin},
		RunFlags:   []string{"--runtime", "io.containerd.runc.v2", "--runc-binary", bin},
		NetFlags:   hostNet,
		CRIHandler: "runc",
	}
	if _, err := os.Stat(bin); err != nil {
		rt.Info.Absent = fmt.Sprintf("%s missing: run `make tools`", bin)
		return rt
	}
	rt.Info.Version = firstLine(bin, "--version")
	if err := s.smoke(ctx, rt); err != nil {
		rt.Info.Absent = err.Error()
	}
	return rt
}

// capEffHas reports whether this process's effective capabilities include cap.
func capEffHas(cap uint) (bool, string) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, ""
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			v = strings.TrimSpace(v)
			n, err := strconv.ParseUint(v, 16, 64)
			return err == nil && n&(1<<cap) != 0, v
		}
	}
	return false, ""
}

// dynamicInterp returns the ELF interpreter of a binary ("" for a static one).
func dynamicInterp(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, _ := io.ReadAll(p.Open())
			return strings.TrimRight(string(b), "\x00")
		}
	}
	return ""
}

// setupRunsc tries gVisor's own shim first (containerd-shim-runsc-v1 with a
// runsc.toml), and where that cannot work, runsc as the OCI runtime of
// containerd's runc shim (BinaryName = a wrapper adding RunscFlags).
func (s *Session) setupRunsc(ctx context.Context) *Runtime {
	bin := filepath.Join(s.Opts.Tools, "runsc")
	info := &report.Runtime{Name: "runsc", Accelerator: "systrap"}
	if _, err := os.Stat(bin); err != nil {
		info.RuntimeType = "io.containerd.runsc.v1"
		info.Absent = fmt.Sprintf("%s missing: run `hack/build-tools.sh .cache/tools runsc` (make bench does)", bin)
		return &Runtime{Info: info}
	}
	info.Version = firstLine(bin, "--version")
	if interp := dynamicInterp(bin); interp != "" {
		info.RuntimeType = "io.containerd.runsc.v1"
		info.Absent = fmt.Sprintf("%s is dynamically linked (interpreter %s): its sandbox and gofer re-execute /proc/self/exe "+
			"(the `umount` helper) inside a minimal chroot that has no %s, so execve fails with ENOENT "+
			"(\"error executing umounter: fork/exec /proc/self/exe: no such file or directory\"); build it with CGO_ENABLED=0 (hack/build-tools.sh does)",
			bin, interp, interp)
		return &Runtime{Info: info}
	}

	// 1. gVisor's shim.
	cfg := filepath.Join(s.Opts.Out, "runsc.toml")
	var toml strings.Builder
	fmt.Fprintf(&toml, "binary_name = %q\nroot = %q\n\n[runsc_config]\n", bin, "/run/gondolin-bench/runsc")
	for _, f := range RunscFlags {
		k, v, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		fmt.Fprintf(&toml, "  %s = %q\n", k, v)
	}
	if err := os.WriteFile(cfg, []byte(toml.String()), 0o644); err != nil {
		info.Absent = err.Error()
		return &Runtime{Info: info}
	}
	own := &Runtime{
		Info:     info,
		RunFlags: []string{"--runtime", "io.containerd.runsc.v1", "--runtime-config-path", cfg},
		NetFlags: hostNet,
		NoCRI:    "no CRI handler for runsc in the bench containerd (its pods would need gVisor's own shim, which groups a pod into one sandbox)",
	}
	info.RuntimeType = "io.containerd.runsc.v1"
	info.How = fmt.Sprintf("gVisor's containerd-shim-runsc-v1 with %s (runsc %s)", cfg, strings.Join(RunscFlags, " "))
	ownErr := s.smoke(ctx, own)
	if ownErr == nil {
		return own
	}
	why := ownErr.Error()
	if strings.Contains(why, "oom_score_adj") {
		if has, eff := capEffHas(24); !has {
			why += fmt.Sprintf(" — containerd-shim-runsc-v1 sets its own oom_score_adj to -999 unconditionally "+
				"(gvisor pkg/shim/v1/manager.go, sys.SetOOMScore); lowering oom_score_adj needs CAP_SYS_RESOURCE, "+
				"which root lacks on this machine (CapEff %s, bit 24 clear), and containerd's SetOOMScore only "+
				"ignores EPERM for non-root or user-namespaced callers", eff)
		}
	}
	info.Notes = append(info.Notes, "gVisor's own shim (containerd-shim-runsc-v1) cannot run here: "+why)

	// 2. containerd's runc shim driving runsc.
	wrapper := filepath.Join(s.Opts.Out, "runsc-wrapper")
	script := fmt.Sprintf("#!/bin/sh\n# runsc as the OCI runtime of containerd-shim-runc-v2 (BinaryName), with the bench's flags.\nexec %s %s \"$@\"\n", bin, strings.Join(RunscFlags, " "))
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		info.Absent = err.Error()
		return &Runtime{Info: info}
	}
	viaRunc := &Runtime{
		Info:     info,
		RunFlags: []string{"--runtime", "io.containerd.runc.v2", "--runc-binary", wrapper},
		NetFlags: hostNet,
		NoCRI: "no CRI handler: runsc runs here as the OCI runtime of containerd-shim-runc-v2 (gVisor's own shim cannot start), " +
			"which would not make a pod one gVisor sandbox",
	}
	info.RuntimeType = "io.containerd.runc.v2"
	info.How = fmt.Sprintf("containerd-shim-runc-v2 with BinaryName %s (exec runsc %s)", wrapper, strings.Join(RunscFlags, " "))
	if err := s.smoke(ctx, viaRunc); err != nil {
		info.Absent = fmt.Sprintf("under containerd-shim-runc-v2: %v; with its own shim: %s", err, why)
	}
	return viaRunc
}

// setupGondolin prepares gondolin under name, with config (runtime config
// TOML; "" for the built-in config) for every container.
func (s *Session) setupGondolin(ctx context.Context, name, config string) *Runtime {
	shim := filepath.Join(s.Opts.RuntimeDir, "bin", "containerd-shim-gondolin-v1")
	info := &report.Runtime{Name: name, RuntimeType: GondolinRuntimeType, Accelerator: "unknown",
		How: "containerd-shim-gondolin-v1 from " + shim + ", built-in config"}
	if s.Opts.GondolinFrom != "" {
		info.How += " (shim and guest image copied from " + s.Opts.GondolinFrom + " at the start)"
	}
	rt := &Runtime{
		Info:       info,
		RunFlags:   []string{"--runtime", GondolinRuntimeType},
		Egress:     true,
		CRIHandler: name,
	}
	if isBaseline(name) {
		if s.Opts.BaselineDir == "" {
			info.Absent = "no baseline build: run with BENCH_BASELINE=<git revision> (make bench builds it)"
			return rt
		}
		// containerd runs a shim given by absolute path; the shim
		// finds its guest image in ../share/gondolin beside it.
		shim = filepath.Join(s.Opts.BaselineDir, "bin", "containerd-shim-gondolin-v1")
		info.How = "containerd-shim-gondolin-v1 from " + shim + " (the baseline, commit " + s.Opts.BaselineRev + "), built-in config"
		rt.RunFlags = []string{"--runtime", shim}
	}
	rt.Shim = shim
	if config != "" {
		dir := filepath.Join(s.Opts.WorkDir, name)
		path := filepath.Join(dir, "config.toml")
		err := os.MkdirAll(dir, 0o755)
		if err == nil {
			err = os.WriteFile(path, []byte(config), 0o644)
		}
		if err != nil {
			info.Absent = fmt.Sprintf("writing its runtime config: %v", err)
			return rt
		}
		rt.RunFlags = append(rt.RunFlags, "--runtime-config-path", path)
		info.How = strings.Replace(info.How, "built-in config", "runtime config: "+strings.ReplaceAll(strings.TrimSpace(config), "\n", ", "), 1)
	}
	rt.NetFlags = func(srv *HTTPSServer, kind DownloadKind) ([]string, error) {
		// The egress proxy verifies the upstream: trust the bench
		// server's certificate through a runtime config.
		dir := filepath.Join(s.Opts.WorkDir, name+"-https")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		ca := filepath.Join(dir, "server.pem")
		cfg := filepath.Join(dir, "config.toml")
		if err := os.WriteFile(ca, srv.CertPEM, 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(cfg, []byte(config+fmt.Sprintf("upstream_ca_file = %q\n", ca)), 0o644); err != nil {
			return nil, err
		}
		return append([]string{"--net-host", "--runtime-config-path", cfg}, GondolinNetAnnotations(srv, kind)...), nil
	}
	b, err := os.ReadFile(shim)
	if err != nil {
		info.Absent = fmt.Sprintf("%v: run `make build`", err)
		return rt
	}
	sum := sha256.Sum256(b)
	info.Version = fmt.Sprintf("shim sha256 %s", hex.EncodeToString(sum[:])[:12])
	if isBaseline(name) {
		info.Version = "commit " + s.Opts.BaselineRev + " (baseline), " + info.Version
	} else if from := s.Opts.GondolinFrom; from == "" || filepath.Clean(from) == filepath.Join(s.Opts.Repo, "_output") {
		// Built from this tree (make bench builds it first).
		tree := "commit " + s.Results.Git.Commit
		if s.Results.Git.Dirty {
			tree += " with uncommitted changes"
		}
		info.Version = tree + ", " + info.Version
	} else {
		info.Version = "built in " + from + ", " + info.Version
	}
	if err := s.smoke(ctx, rt); err != nil {
		info.Absent = fmt.Sprintf("%v (the shim logs into %s)", err, s.Opts.ContainerdLog)
		return rt
	}
	acc, reason := GondolinAccelerator(s.Opts.ContainerdLog)
	if acc != "" {
		info.Accelerator = acc
		info.Notes = append(info.Notes, "accelerator "+acc+": "+reason)
	}
	return rt
}

// GondolinAccelerator reads the accelerator the gondolin shim chose last from
// containerd's log (the shim logs `msg="VM setup chosen" accel=tcg
// reason="…"`, before that `msg="accelerator chosen"`), upper-cased: "TCG"
// or "KVM". Empty if not found.
func GondolinAccelerator(logPath string) (acc, reason string) {
	f, err := os.Open(logPath)
	if err != nil {
		return "", ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.Contains(l, `msg="VM setup chosen"`) && !strings.Contains(l, `msg="accelerator chosen"`) {
			continue
		}
		if a := logField(l, "accel"); a != "" {
			acc, reason = strings.ToUpper(a), logField(l, "reason")
		}
	}
	return acc, reason
}

// logField extracts key=value or key="quoted value" from a logrus text line.
func logField(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, `"`) {
		if s, err := strconv.QuotedPrefix(v); err == nil {
			u, _ := strconv.Unquote(s)
			return u
		}
		return strings.Trim(v, `"`)
	}
	v, _, _ = strings.Cut(v, " ")
	return v
}

// GondolinNetAnnotations are the `ctr run` annotations that let a gondolin
// container make the download of kind from srv: net.allow for the TLS
// interception (https) and the plain HTTP proxy (http), net.tcp-allow for a
// raw relay of the guest's own TLS to the server (https-relay; bench-fetch
// skips verification, so the guest needs no certificate for it). The server
// listens on the host's address, internal to the policy (a private or
// documentation range, and the host's own address either way), so
// net.allow-internal names it.
func GondolinNetAnnotations(srv *HTTPSServer, kind DownloadKind) []string {
	ip := srv.IP.String()
	var rule string
	switch kind {
	case DownloadHTTPSRelay:
		rule = fmt.Sprintf("io.gondolin.net.tcp-allow=%s:%d", ip, srv.Port)
	case DownloadHTTP:
		rule = fmt.Sprintf("io.gondolin.net.allow=%s:%d", ip, srv.HTTPPort)
	default:
		rule = fmt.Sprintf("io.gondolin.net.allow=%s:%d", ip, srv.Port)
	}
	return []string{"--annotation", rule, "--annotation", "io.gondolin.net.allow-internal=" + ip}
}

// kvmStatus says whether /dev/kvm can run a guest here, and if not, why.
func kvmStatus() string {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return "not usable: /dev/kvm does not exist"
	}
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "flags") {
			f := " " + l + " "
			if strings.Contains(f, " vmx ") || strings.Contains(f, " svm ") {
				return "usable (/dev/kvm present, CPU advertises vmx/svm)"
			}
			return "not usable: /dev/kvm exists but the CPU advertises neither vmx nor svm (nested virtualization is off)"
		}
	}
	return "unknown"
}
