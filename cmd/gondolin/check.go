package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/earendil-works/gondolin-containerd/config"
	"github.com/earendil-works/gondolin-containerd/hostcheck"
)

func checkCommand() command {
	return command{
		name:    "check",
		summary: "can this host run gondolin containers, and how fast",
		synopsis: []string{
			"[--config FILE] [--containerd-config FILE] [--docker-config FILE] [--json]",
		},
		description: `Checks what the shim needs, with the shim's own code, one line per item:
ok, warn (works, but slower or not for every way of running a
container: the line says what to do), fail (no container can run until
it is fixed) or info.

shim        containerd-shim-gondolin-v1 on PATH (containerd looks there),
            or beside gondolin.
config      the runtime config loads (--config; every create fails if
            not). Its errors are shown; the other items then assume
            the built-in defaults.
secrets     the [secrets.NAME] files exist with mode 0600 (not read).
kvm         KVM usable, or why not (no /dev/kvm, permissions, nested
            virtualisation off); without it VMs run under TCG.
qemu        the QEMU binary the shim would run, and its version.
virtiofsd   the file server the shim would run: the Rust one or QEMU's.
snapshots   whether VMs resume from saved states instead of booting
            (QEMU 9.0 or later and the Rust virtiofsd; snapshot_boot).
vhost-vsock /dev/vhost-vsock (not needed: the agent channel is
            virtio-serial).
kernel,     the guest kernel and initramfs, checked against the
initrd      manifest.json of make images beside them.
ca          the MITM CA in /run/gondolin/ca: valid, or made at the
            first container.
containerd  the CRI plugin's registration in --containerd-config and
            the files it imports, with io.gondolin.* annotations passed.
docker      a runtime for the shim in --docker-config.
speed       how fast containers start: KVM or TCG, resumed or booted.

It starts no VM and changes nothing. Run it as root to see what the
shim sees (the CA directory is root's).`,
		exitStatus: `For check: 0 when this host can run a container (warnings allowed); 1
when an item failed.`,
		examples: `    sudo gondolin check

The items that are not ok, for a fleet's monitoring:
    gondolin check --config /etc/gondolin/ci.toml --json |
        jq '.items[] | select(.status != "ok")'`,
		flags: func(fs *flag.FlagSet) runFunc {
			var o hostcheck.Options
			var jsonOut bool
			fs.StringVar(&o.ConfigPath, "config", "", "The runtime config `FILE` (default: "+config.DefaultPath+" if it exists, else the built-in defaults, as the shim reads it).")
			fs.StringVar(&o.ContainerdConfig, "containerd-config", defaultContainerdConfig, "containerd's main config `FILE`.")
			fs.StringVar(&o.DockerConfig, "docker-config", defaultDockerConfig, "Docker's daemon.json `FILE`.")
			fs.BoolVar(&jsonOut, "json", false, "Write the report as one JSON object (can_run, and the items' name, status and summary) instead of lines.")
			return func(ctx context.Context, s ioStreams, args []string) error {
				if len(args) > 0 {
					return usagef("unexpected argument %q: this command takes options only", args[0])
				}
				if o.ConfigPath != "" {
					if _, err := os.Stat(o.ConfigPath); err != nil {
						return usagef("--config: %v", err)
					}
				}
				if self, err := os.Executable(); err == nil {
					o.Self = self
				}
				rep := hostcheck.Run(ctx, o)
				var err error
				if jsonOut {
					err = rep.WriteJSON(s.stdout)
				} else {
					err = rep.WriteText(s.stdout)
				}
				if err != nil {
					return err
				}
				if !rep.CanRun {
					return statusError{exitFailed, fmt.Sprintf("this host cannot run gondolin containers: %s failed", strings.Join(rep.Failed(), ", "))}
				}
				return nil
			}
		},
	}
}
