package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/earendil-works/gondolin-containerd/auditlog"
	"github.com/earendil-works/gondolin-containerd/config"
)

func auditCommand() command {
	return command{
		name:    "audit",
		summary: "show a container's egress decisions",
		synopsis: []string{
			"[--denied] [--follow] [--json] [--namespace NS] [--config FILE | --audit-dir DIR] CONTAINER",
			"[--denied] [--follow] [--json] [--namespace NS] [--config FILE | --audit-dir DIR] --all",
		},
		description: `Shows the egress decisions the shim made for a container, oldest first,
from its audit files: <audit_dir>/<namespace>/<container>.jsonl and the
one it rotated away, .jsonl.1 (audit_dir is the runtime config's, read
as the shim reads it: --config, else /etc/gondolin/config.toml if it
exists, else the default /var/log/gondolin/audit; --audit-dir names the
directory itself). The files stay after the container is gone.

CONTAINER is the container's ID, or a prefix of it that names one
container only (docker ps shows the first 12 characters of Docker's
IDs); it is looked for in every namespace (moby for Docker, k8s.io for
Kubernetes, default for ctr) unless --namespace names one. --all shows
every container's records, merged by time, with a CONTAINER column.

The table's columns: TIME (UTC), DECISION (allowed, denied, or
suppressed: a summary of the records the shim left out past
limits.audit_lines_per_second, counting its denials), PROTO (dns, http,
https, tls, tcp, udp), HOST (with the port), METHOD (the HTTP method, or
the DNS query type), PATH (without the query), and RULE: the rule that
decided: for an allowed request the one that allowed it, for a denial
why (and often, after "; ", what would allow it). Characters a terminal
would act on are shown escaped (\x1b): the host, method and path come
from the guest. Hosts and paths longer than the column are cut with "…";
--json shows them whole.

The files are read as a stream, so a large audit file does not take
memory. A line that is not an audit record is reported on standard
error with its file and line number, and skipped.`,
		exitStatus: `A line that could not be shown makes the status 1, after everything
else has been shown. Interrupting --follow (SIGINT, SIGTERM) is its
normal end: 0, or 1 if a line could not be shown.`,
		examples: `The denials of a Docker container, by the ID prefix docker ps shows:
    gondolin audit --denied 3f2a9c1b7e4d

Watch every container's decisions as they happen:
    gondolin audit --all --follow

Kubernetes containers' denials as JSON, for jq:
    gondolin audit --namespace k8s.io --all --denied --json | jq .host

Audit files of a test setup's runtime config:
    gondolin audit --audit-dir /tmp/gondolin-test/audit mycontainer`,
		flags: func(fs *flag.FlagSet) runFunc {
			o := auditlog.Options{}
			var jsonOut bool
			fs.BoolVar(&o.Follow, "follow", false, "After the records there are, show new ones as the shim writes them (also across a rotation of the file, and with --all from containers that start meanwhile), until interrupted.")
			fs.BoolVar(&o.Filter.Denied, "denied", false, "Show denials only (and the summaries of suppressed records, which may count some).")
			fs.BoolVar(&o.All, "all", false, "Show every container's records, in --namespace or all namespaces.")
			fs.BoolVar(&jsonOut, "json", false, "Write the records as JSON lines, as the shim wrote them, instead of a table.")
			fs.StringVar(&o.Namespace, "namespace", "", "Look for the container in containerd namespace `NS` only (default: every namespace).")
			fs.StringVar(&o.Dir, "audit-dir", "", "Read the audit files in `DIR` instead of the runtime config's audit_dir.")
			var configPath string
			fs.StringVar(&configPath, "config", "", "The runtime config `FILE` whose audit_dir holds the files (default: "+config.DefaultPath+" if it exists, else the built-in defaults, as the shim reads it).")
			return func(ctx context.Context, s ioStreams, args []string) error {
				switch {
				case o.Dir != "" && configPath != "":
					return usagef("give --config or --audit-dir, not both")
				case o.Dir == "":
					cfg, err := loadConfig(configPath)
					if err != nil {
						return usageError{err.Error()}
					}
					o.Dir = cfg.AuditDir
				}
				switch {
				case o.All && len(args) > 0:
					return usagef("give a container or --all, not both")
				case !o.All && len(args) == 0:
					return usagef("name a container (its ID or a unique prefix), or give --all")
				case len(args) > 1:
					return usagef("one container at a time (or --all): got %q", args)
				case len(args) == 1:
					o.Container = args[0]
				}
				var w auditlog.Writer
				if jsonOut {
					w = auditlog.NewJSONWriter(s.stdout)
				} else {
					w = auditlog.NewTableWriter(s.stdout, o.All)
				}
				problems := 0
				err := auditlog.Show(ctx, o, w, func(p auditlog.Problem) {
					problems++
					fmt.Fprintf(s.stderr, "gondolin audit: %v\n", p)
				})
				if err != nil {
					return err
				}
				if problems > 0 {
					return statusError{exitFailed, fmt.Sprintf("%d lines could not be shown (see above)", problems)}
				}
				return nil
			}
		},
	}
}
