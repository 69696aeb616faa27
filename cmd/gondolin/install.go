package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/earendil-works/gondolin-containerd/hostinstall"
)

const (
	defaultContainerdConfig = "/etc/containerd/config.toml"
	defaultDockerConfig     = "/etc/docker/daemon.json"
)

// installFlags are the flags install and uninstall share.
type installFlags struct {
	containerd, docker, dryRun bool
	containerdConfig, dropIn   string
	dockerConfig               string
	// install only
	inPlace bool
	shim    string
}

func (f *installFlags) define(fs *flag.FlagSet, install bool) {
	verb := "Register the runtime with"
	if !install {
		verb = "Remove the runtime from"
	}
	fs.BoolVar(&f.containerd, "containerd", false, verb+" containerd's CRI plugin (Kubernetes, crictl), in the config file --containerd-config.")
	fs.BoolVar(&f.docker, "docker", false, verb+" Docker: the runtimes of the daemon.json --docker-config.")
	fs.BoolVar(&f.dryRun, "dry-run", false, "Print the changes as unified diffs, and write nothing.")
	fs.StringVar(&f.containerdConfig, "containerd-config", defaultContainerdConfig, "containerd's main config `FILE`.")
	fs.StringVar(&f.dropIn, "containerd-dropin", "", "The drop-in `FILE` that holds the runtime entry (default: conf.d/gondolin.toml in the directory of --containerd-config).")
	fs.StringVar(&f.dockerConfig, "docker-config", defaultDockerConfig, "Docker's daemon.json `FILE`.")
	if install {
		fs.BoolVar(&f.inPlace, "containerd-in-place", false, "Put the runtime entry into --containerd-config itself, between marker comments, instead of a drop-in (for example when configuration management owns conf.d).")
		fs.StringVar(&f.shim, "shim", "", "The shim binary's absolute `PATH`, for a shim that is not on containerd's PATH: written as the entry's runtime_path, and as Docker's runtimeType.")
	}
}

// plans checks the flags and plans every change, writing nothing: a
// failure in one daemon's files leaves both untouched.
func (f *installFlags) plans(install bool, args []string) ([]hostinstall.Plan, error) {
	if len(args) > 0 {
		return nil, usagef("unexpected argument %q: this command takes options only", args[0])
	}
	if !f.containerd && !f.docker {
		return nil, usagef("name the daemons to configure: --containerd, --docker, or both")
	}
	var plans []hostinstall.Plan
	if f.containerd {
		cfg, err := filepath.Abs(f.containerdConfig)
		if err != nil {
			return nil, usagef("--containerd-config: %v", err)
		}
		drop := ""
		if f.dropIn != "" {
			if drop, err = filepath.Abs(f.dropIn); err != nil {
				return nil, usagef("--containerd-dropin: %v", err)
			}
		}
		p, err := hostinstall.PlanContainerd(install, hostinstall.ContainerdOptions{Config: cfg, DropIn: drop, InPlace: f.inPlace, Shim: f.shim})
		if err != nil {
			return nil, err
		}
		plans = append(plans, p)
	}
	if f.docker {
		cfg, err := filepath.Abs(f.dockerConfig)
		if err != nil {
			return nil, usagef("--docker-config: %v", err)
		}
		p, err := hostinstall.PlanDocker(install, hostinstall.DockerOptions{Config: cfg, Shim: f.shim})
		if err != nil {
			return nil, err
		}
		plans = append(plans, p)
	}
	return plans, nil
}

// carryOut prints each plan's notes, then its diff (dry run) or what it
// wrote, and what the daemon needs to read it. It never restarts one.
func carryOut(s ioStreams, plans []hostinstall.Plan, dryRun bool) error {
	for _, p := range plans {
		for _, n := range p.Notes {
			fmt.Fprintf(s.stdout, "%s: %s\n", p.Daemon, n)
		}
		if len(p.Changes) == 0 {
			continue
		}
		if dryRun {
			fmt.Fprint(s.stdout, p.Diff())
			fmt.Fprintf(s.stdout, "%s: dry run, nothing written; then: %s\n", p.Daemon, p.Reload)
			continue
		}
		done, err := p.Apply(s.now())
		for _, d := range done {
			fmt.Fprintf(s.stdout, "%s: %s\n", p.Daemon, d)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", p.Daemon, err)
		}
		fmt.Fprintf(s.stdout, "%s: now %s\n", p.Daemon, p.Reload)
	}
	return nil
}

func installCommand() command {
	return command{
		name:    "install",
		summary: "register the runtime with containerd and Docker",
		synopsis: []string{
			"--containerd [--docker] [--dry-run] [--containerd-config FILE] [--containerd-dropin FILE] [--containerd-in-place] [--shim PATH]",
			"--docker [--dry-run] [--docker-config FILE] [--shim PATH]",
		},
		description: `Registers the runtime gondolin (runtime type io.containerd.gondolin.v1)
with containerd's CRI plugin and with Docker, so that Kubernetes
(RuntimeClass handler gondolin), crictl and docker run --runtime gondolin
find it. ctr needs no registration: ctr run --runtime
io.containerd.gondolin.v1 names the shim itself.

containerd: the entry goes into a drop-in file, conf.d/gondolin.toml
beside the main config, that the main config imports: its imports key
gains the drop-in's path, unless one of its entries (such as containerd
2's default '/etc/containerd/conf.d/*.toml') covers it already; without
a main config, one is created that only imports the drop-in, and
containerd's defaults apply to everything else. The drop-in has the main
config's version (2 or 3, with the CRI plugin's name for that version;
3 for a version 1 file) and passes the io.gondolin.* annotations of pods
and containers on to the runtime (pod_annotations,
container_annotations). With --containerd-in-place, or when the main
config's imports cannot be edited, the entry is appended to the main
config between marker comments instead.

Docker: daemon.json gains runtimes.gondolin with runtimeType
io.containerd.gondolin.v1 (the file is created if absent).

Every edit changes only the text it adds: comments, order and layout of
the rest stay as they were, and the result is checked by decoding it
(with containerd's own TOML parser). An existing file is copied to
FILE.gondolin-TIME.bak before it is changed. A runtime already
registered as gondolin (by this command or by hand) is left alone:
install says "already installed" and changes nothing; a different
runtime under the name gondolin is an error.

install never restarts a daemon: it says which one to restart (containerd
reads its config only at start) or reload (dockerd re-reads its runtimes
on SIGHUP).`,
		exitStatus: `A runtime already installed is success (0); a different runtime
registered as gondolin, or a config file that is not valid TOML or
JSON, fails (1) before anything is written.`,
		examples: `See what would change, then do it:
    gondolin install --containerd --docker --dry-run
    sudo gondolin install --containerd --docker
    sudo systemctl restart containerd && sudo systemctl reload docker

A shim outside containerd's PATH:
    gondolin install --containerd \
        --shim /opt/gondolin/bin/containerd-shim-gondolin-v1

A scratch config, to try it out:
    gondolin install --containerd --containerd-config /tmp/c/config.toml`,
		flags: func(fs *flag.FlagSet) runFunc {
			f := &installFlags{}
			f.define(fs, true)
			return func(ctx context.Context, s ioStreams, args []string) error {
				if f.shim != "" {
					if err := hostinstall.CheckShim(f.shim); err != nil {
						return usageError{err.Error()}
					}
				}
				plans, err := f.plans(true, args)
				if err != nil {
					return err
				}
				if f.shim == "" {
					if note := hostinstall.ShimNote(); note != "" {
						fmt.Fprintln(s.stderr, "gondolin install: "+note)
					}
				}
				return carryOut(s, plans, f.dryRun)
			}
		},
	}
}

func uninstallCommand() command {
	return command{
		name:    "uninstall",
		summary: "remove the runtime from containerd and Docker",
		synopsis: []string{
			"--containerd [--docker] [--dry-run] [--containerd-config FILE] [--containerd-dropin FILE] [--docker-config FILE]",
			"--docker [--dry-run] [--docker-config FILE]",
		},
		description: `Removes what gondolin install added, and nothing else: the drop-in
file it wrote (recognised by its first line) and the main config's
import of it (the whole imports line if install added it), the block it
appended between marker comments, a main config it created; Docker's
runtimes.gondolin (and runtimes, if that leaves it empty).

It refuses, changing nothing, when the runtime would stay registered by
an entry install did not write (remove that by hand), or when gondolin
is containerd's default_runtime_name or Docker's default-runtime (the
daemon could not start its containers, or start at all, without it).
A changed file is first copied to FILE.gondolin-TIME.bak, except a
drop-in exactly as install wrote it.

uninstall never restarts a daemon: it says which one to restart.
Containers running under gondolin keep running until they stop.`,
		exitStatus: `Nothing to remove is success (0).`,
		examples: `    gondolin uninstall --containerd --docker --dry-run
    sudo gondolin uninstall --containerd --docker`,
		flags: func(fs *flag.FlagSet) runFunc {
			f := &installFlags{}
			f.define(fs, false)
			return func(ctx context.Context, s ioStreams, args []string) error {
				plans, err := f.plans(false, args)
				if err != nil {
					return err
				}
				return carryOut(s, plans, f.dryRun)
			}
		},
	}
}
