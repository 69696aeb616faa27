// Package hostcheck is `gondolin check`: can this host run gondolin
// containers, and how fast. It asks the same code the shim asks when it
// chooses a VM setup (vmm.DetectAccelerator, the VMM backend,
// vmm.LookupVirtiofsd, the backends' CanSaveState) and reads the files the
// shim reads (the runtime config, the guest image and its manifest, the
// MITM CA), then how containerd and Docker are told about the runtime.
//
// Each item is one line: ok, warn (works, but slower or not everywhere),
// fail (no container can run) or info. The checks that read files take
// their paths as arguments, so they are tested with files of the tests'
// own; those that probe the host (KVM, QEMU, virtiofsd) are tested against
// the real host by the integration tests.
package hostcheck

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/earendil-works/gondolin-containerd/config"
	"github.com/earendil-works/gondolin-containerd/vmm"
)

// Status is an item's outcome.
type Status string

const (
	// OK: works.
	OK Status = "ok"
	// Warn: works, but slower, or not for every way of running a
	// container; the summary says what to do.
	Warn Status = "warn"
	// Fail: no container can run until it is fixed.
	Fail Status = "fail"
	// Info: a fact, neither good nor bad.
	Info Status = "info"
)

// Item is one line of the report.
type Item struct {
	Name    string `json:"name"`
	Status  Status `json:"status"`
	Summary string `json:"summary"`
}

// Report is every item, and whether a container can run.
type Report struct {
	// CanRun is false when an item failed.
	CanRun bool   `json:"can_run"`
	Items  []Item `json:"items"`
}

func (r *Report) add(it Item) {
	r.Items = append(r.Items, it)
	if it.Status == Fail {
		r.CanRun = false
	}
}

// Failed names the items that failed.
func (r *Report) Failed() []string {
	var out []string
	for _, it := range r.Items {
		if it.Status == Fail {
			out = append(out, it.Name)
		}
	}
	return out
}

// Options say where things are.
type Options struct {
	// ConfigPath is the runtime config; "" is config.DefaultPath when it
	// exists, else the built-in defaults, as the shim reads it.
	ConfigPath string
	// Self is the gondolin binary's path: the shim is looked for beside
	// it when it is not on PATH.
	Self string
	// ContainerdConfig and DockerConfig are the daemons' config files.
	ContainerdConfig string
	DockerConfig     string
	// StateRoot is the runtime's state root, where the MITM CA lives
	// (its ca directory); "" is config.DefaultStateRoot.
	StateRoot string
}

// Run checks the host.
func Run(ctx context.Context, o Options) *Report {
	rep := &Report{CanRun: true}
	shim, shimItem := checkShim(o.Self)
	rep.add(shimItem)
	// The config's defaults (guest image paths) are relative to the
	// shim's directory, as the shim computes them.
	exeDir := filepath.Dir(shim)
	if shim == "" {
		exeDir = filepath.Dir(o.Self)
	}
	cfg, cfgItem := checkConfig(o.ConfigPath, exeDir)
	rep.add(cfgItem)
	if it, ok := checkSecretSources(cfg); ok {
		rep.add(it)
	}

	kvmItem, accel := checkKVM(cfg.Accelerator, kvmProbe)
	rep.add(kvmItem)
	b, qemuItem := checkQEMU(ctx, cfg)
	rep.add(qemuItem)
	fsd, fsdItem := checkVirtiofsd(ctx, cfg)
	rep.add(fsdItem)
	snapItem, snapshots := checkSnapshots(ctx, cfg, b, fsd)
	rep.add(snapItem)
	rep.add(checkVsock("/dev/vhost-vsock"))
	rep.add(checkImage("kernel", "kernel_path", cfg.KernelPath))
	rep.add(checkImage("initrd", "initrd_path", cfg.InitrdPath))

	root := o.StateRoot
	if root == "" {
		root = config.DefaultStateRoot
	}
	// The runtime keeps its CA in <state root>/ca (the network step of
	// runtime/create.go).
	rep.add(checkCA(filepath.Join(root, "ca"), nowFunc()))
	rep.add(checkContainerd(o.ContainerdConfig))
	rep.add(checkDocker(o.DockerConfig))
	rep.add(speedItem(accel, snapshots))
	return rep
}

// speedItem sums up how fast containers start here.
func speedItem(accel vmm.Accelerator, snapshots bool) Item {
	it := Item{Name: "speed", Status: Info}
	switch {
	case accel == vmm.AccelKVM && snapshots:
		it.Summary = "fast: KVM, and VMs resume from saved states instead of booting"
	case accel == vmm.AccelKVM:
		it.Summary = "KVM, but every VM boots (see snapshots)"
	case snapshots:
		it.Summary = "slow: TCG emulates the guest CPU (see kvm); VMs resume from saved states, which saves most of the boot"
	default:
		it.Summary = "slowest: TCG emulates the guest CPU (see kvm), and every VM boots (see snapshots)"
	}
	return it
}

// checkShim finds the shim as containerd does (on PATH), or beside self.
func checkShim(self string) (string, Item) {
	it := Item{Name: "shim"}
	if p, err := lookPath(shimBinary); err == nil {
		it.Status, it.Summary = OK, p+" (containerd finds it on its PATH)"
		return p, it
	}
	if self != "" {
		p := filepath.Join(filepath.Dir(self), shimBinary)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			it.Status = Warn
			it.Summary = p + " is not on PATH: containerd looks for " + shimBinary + " on its own PATH; install it there (make install), or register it with gondolin install --shim " + p
			return p, it
		}
	}
	it.Status = Fail
	it.Summary = shimBinary + " is neither on PATH nor beside gondolin: containerd cannot start a gondolin container (make install puts both in PREFIX/bin)"
	return "", it
}

// checkConfig loads the runtime config as the shim does. A config that
// does not load fails every create; the other items are then checked
// against the built-in defaults.
func checkConfig(path, exeDir string) (*config.Config, Item) {
	it := Item{Name: "config"}
	cfg, err := config.Load(path, exeDir)
	if err != nil {
		it.Status = Fail
		it.Summary = oneLine(err.Error()) + " (every create fails; the items below assume the built-in defaults)"
		return config.Default(exeDir), it
	}
	it.Status = OK
	switch {
	case path != "":
		it.Summary = path
	default:
		if _, err := os.Stat(config.DefaultPath); err == nil {
			it.Summary = config.DefaultPath
		} else {
			it.Summary = "built-in defaults (" + config.DefaultPath + " does not exist)"
		}
	}
	return cfg, it
}

// checkSecretSources looks at the [secrets.NAME] files without reading
// them: a file the shim would refuse fails the creates that use it. ok
// is false when the config names no host secret files.
func checkSecretSources(cfg *config.Config) (Item, bool) {
	var files, problems []string
	for name, src := range cfg.Secrets {
		if src.File == "" {
			continue
		}
		files = append(files, name)
		st, err := os.Lstat(src.File)
		switch {
		case err != nil:
			problems = append(problems, "secrets."+name+".file: "+errText(err))
		case !st.Mode().IsRegular():
			problems = append(problems, "secrets."+name+".file: "+src.File+" is not a regular file")
		case st.Mode().Perm()&0o077 != 0:
			problems = append(problems, "secrets."+name+".file: "+src.File+" is readable or writable by others (chmod 600)")
		}
	}
	if len(files) == 0 {
		return Item{}, false
	}
	if len(problems) > 0 {
		sortStrings(problems)
		return Item{Name: "secrets", Status: Warn, Summary: strings.Join(problems, "; ") + ": containers using these secrets fail to create"}, true
	}
	sortStrings(files)
	return Item{Name: "secrets", Status: OK, Summary: "host secret files present with mode 0600 or stricter: " + strings.Join(files, ", ")}, true
}

// errText is err without the path it repeats, for permission and
// existence errors.
func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Path + ": " + pe.Err.Error()
	}
	return err.Error()
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
