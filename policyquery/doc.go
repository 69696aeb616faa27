// Package policyquery is `gondolin policy test`: it says, without running a
// container, whether a container's egress policy would let a request
// through, which rule decides, and which secret would be substituted.
//
// It asks the shim's own code the shim's own questions. The policy comes
// from the runtime config (config.Load), the container's annotations
// (oci.ParseAnnotations with the config's named policies, defaults and
// allowed keys) and config.Egress, exactly as the runtime builds it; the
// decisions are policy.NewPolicy's DecideDNS, DecideConnect and
// DecideRequest. What a guest would do is replayed step by step: its DNS
// question, its TCP connection (to the synthetic address the shim's DNS
// would hand out, or to the address forwarded DNS would return), and for
// a URL its HTTP request, built as curl builds it.
//
// Secrets get a dummy value each: the decisions never look at a value,
// only at placeholders, so the tool never reads the host's secret files or
// environment.
//
// Evaluate is the core; it touches the network only through its Env (a
// resolver and the host's addresses), so that it is tested with tables.
// Run is the subcommand: flags, the host's Env, and the report as text or
// JSON.
package policyquery
