package main

import (
	"context"
	"errors"
	"flag"
	"net/http"

	"github.com/earendil-works/gondolin-containerd/config"
	"github.com/earendil-works/gondolin-containerd/policyquery"
)

// exitDenied is policy test's status for a request the policy denies; a
// failure to decide is exitUsage, never 1.
const exitDenied = 1

func policyCommand() command {
	return command{
		name:    "policy",
		summary: "would a container's egress policy allow a request",
		synopsis: []string{
			"test [--annotation KEY=VALUE]... [--config FILE] [--method METHOD] [--header 'NAME: VALUE']... [--json] URL",
			"test [--annotation KEY=VALUE]... [--config FILE] [--json] HOST:PORT",
		},
		description: `policy test says, without running a container, whether a container
with the given io.gondolin.* annotations would be let through to URL (an
http:// or https:// request) or HOST:PORT (a raw TCP connection), which
rule decides, what would allow a denial, and what becomes of each of the
container's secrets.

It builds the policy as the shim does (the same code): the runtime
config (--config) with its named policies ([policies]),
default_annotations and allowed_annotations, the annotations over them,
upstream_hosts and upstream_dns. It then replays what a guest does: its
DNS question (a synthetic address, or with io.gondolin.net.dns=trusted
or open a lookup by the upstream resolver), its TCP connection, and for
a URL its HTTP request, built as curl builds it (Host with the port when
the URL names one, --method, --header). For each secret it says whether
a request to the target carrying the secret's placeholder (in an
Authorization header) would have it replaced by the value (substituted),
be refused (blocked), never be sent (the request is denied anyway), or
go out as it is (a raw relay, never read).

Secrets get a dummy value: the tool never reads the host's secret files
or environment. Names are looked up as the shim looks them up, but from
the host's network namespace; the host's own addresses count as
internal, as they do for a container run with --net-host.

The first lines are the decision (allowed, denied, or for HOST:PORT
inspected: the port is open to HTTP or TLS to allowed hosts only, and
another protocol is refused), the rule and the hint; then the policy,
each step (dns, connect, upstream, request) and each secret. --json
writes the same as one JSON object.`,
		exitStatus: `For policy test: 0 the request would be allowed; 1 it would be denied
(for HOST:PORT also when the port is only inspected); 2 bad input (a
target, annotation, header or method that cannot be right, annotations
the shim would refuse, a runtime config that does not load) or the
policy could not be built.`,
		examples: `Would an npm install reach the registry under the named policy npm?
    gondolin policy test --annotation io.gondolin.policy=npm \
        https://registry.npmjs.org/left-pad

A secret bound to one host, sent to another:
    gondolin policy test \
      --annotation io.gondolin.net.allow=api.github.com,github.com \
      --annotation io.gondolin.secret.GITHUB_TOKEN=api.github.com \
      https://github.com/

Raw TCP, for a script:
    gondolin policy test --json \
        --annotation io.gondolin.net.tcp-allow=db.internal:5432 \
        db.internal:5432 | jq .decision`,
		flags: func(fs *flag.FlagSet) runFunc {
			annotations := map[string]string{}
			header := http.Header{}
			var configPath, method string
			var jsonOut bool
			fs.Func("annotation", "A container annotation `KEY=VALUE` (io.gondolin.* keys); repeat it for several. A list is one comma-separated value, as on the container.", func(kv string) error {
				return policyquery.ParseAnnotation(annotations, kv)
			})
			fs.StringVar(&configPath, "config", "", "The runtime config `FILE` (default: "+config.DefaultPath+" if it exists, else the built-in defaults, as the shim reads it).")
			fs.StringVar(&method, "method", http.MethodGet, "The HTTP `METHOD` of a URL's request.")
			fs.Func("header", "A request header `'NAME: VALUE'` of a URL's request; repeat it for several.", func(line string) error {
				return policyquery.ParseHeader(header, line)
			})
			fs.BoolVar(&jsonOut, "json", false, "Write the report as one JSON object instead of lines.")
			return func(ctx context.Context, s ioStreams, args []string) error {
				switch {
				case len(args) == 0 || args[0] != "test":
					return usagef("policy has one subcommand: policy test [OPTIONS] URL|HOST:PORT")
				case len(args) != 2:
					return usagef("policy test takes one URL or HOST:PORT, got %d arguments", len(args)-1)
				}
				if err := policyquery.CheckMethod(method); err != nil {
					return usageError{err.Error()}
				}
				target, err := policyquery.ParseTarget(args[1])
				if err != nil {
					return usageError{err.Error()}
				}
				if target.Protocol == policyquery.ProtoTCP && (method != http.MethodGet || len(header) > 0) {
					return usagef("--method and --header shape an HTTP request: give a URL, not HOST:PORT")
				}
				cfg, err := loadConfig(configPath)
				if err != nil {
					return usageError{err.Error()}
				}
				env, err := policyquery.HostEnv(cfg)
				if err != nil {
					return usageError{err.Error()}
				}
				rep, err := policyquery.Evaluate(ctx, cfg, policyquery.Query{Target: target, Method: method, Header: header, Annotations: annotations}, env)
				var ie *policyquery.InputError
				switch {
				case errors.As(err, &ie):
					return usageError{err.Error()}
				case err != nil:
					return statusError{exitUsage, err.Error()}
				}
				if jsonOut {
					err = rep.WriteJSON(s.stdout)
				} else {
					err = rep.WriteText(s.stdout)
				}
				if err != nil {
					return statusError{exitUsage, err.Error()}
				}
				if !rep.Allowed {
					return statusError{exitDenied, ""}
				}
				return nil
			}
		},
	}
}
