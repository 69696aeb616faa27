package policyquery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/earendil-works/gondolin-containerd/config"
	"github.com/earendil-works/gondolin-containerd/oci"
	"github.com/earendil-works/gondolin-containerd/policy"
)

// Query is one question: would a container with Annotations, under the
// runtime config, get through to Target?
type Query struct {
	Target Target
	// Method and Header are the HTTP request's; Method "" is GET.
	Method string
	Header http.Header
	// Annotations are the container's io.gondolin.* annotations.
	Annotations map[string]string
}

// Env is what Evaluate learns from the host: the only way it reaches the
// network.
type Env struct {
	// Resolver looks names up as the shim's upstream resolver does, and
	// answers forwarded DNS (net.dns=trusted|open) as the upstream
	// servers would; the config's upstream_hosts are laid over it here
	// for the shim's own lookups, not for forwarded DNS, as in the shim.
	// Nil uses net.DefaultResolver.
	Resolver policy.Resolver
	// HostAddrs lists the host's own addresses, which the policy refuses
	// like loopback (policy.Config.HostAddrs). Nil: none beyond the
	// internal ranges.
	HostAddrs func(context.Context) ([]netip.Addr, error)
}

// Decisions a Report comes to.
const (
	DecisionAllowed = "allowed"
	DecisionDenied  = "denied"
	// DecisionInspected is a raw TCP target on a port the policy only
	// inspects: HTTP or TLS to an allowed host passes, any other
	// protocol is refused.
	DecisionInspected = "inspected"
)

// Steps of a Report, in the order a guest takes them.
const (
	StepNet      = "net"
	StepDNS      = "dns"
	StepConnect  = "connect"
	StepUpstream = "upstream"
	StepRequest  = "request"
)

// Report is what Evaluate found: the decision, the rule that made it,
// each step of the guest's way, and each secret's fate.
type Report struct {
	Target   string `json:"target"`
	Protocol string `json:"protocol"`
	Method   string `json:"method,omitempty"`
	// Decision is DecisionAllowed, DecisionDenied or DecisionInspected;
	// Allowed is true for DecisionAllowed only.
	Decision string `json:"decision"`
	Allowed  bool   `json:"allowed"`
	// Reason and Hint are the deciding step's: the rule that decided
	// (the audit record's reason) and what would allow a denial.
	Reason  string         `json:"reason"`
	Hint    string         `json:"hint,omitempty"`
	Policy  PolicySummary  `json:"policy"`
	Steps   []Step         `json:"steps"`
	Secrets []SecretResult `json:"secrets,omitempty"`
}

// PolicySummary is the policy the container would run, as parsed.
type PolicySummary struct {
	Mode string `json:"mode"`
	DNS  string `json:"dns"`
	// Policies are the named policies io.gondolin.policy picked (or the
	// config's default_annotations did).
	Policies      []string            `json:"policies,omitempty"`
	Allow         []string            `json:"allow,omitempty"`
	AllowInternal []string            `json:"allow_internal,omitempty"`
	TCPAllow      []string            `json:"tcp_allow,omitempty"`
	Secrets       map[string][]string `json:"secrets,omitempty"`
}

// Step is one decision on the guest's way to the target.
type Step struct {
	Name    string `json:"step"`
	Allowed bool   `json:"allowed"`
	Reason  string `json:"reason"`
	Hint    string `json:"hint,omitempty"`
	// Detail says what the step did: the address DNS answered, the
	// connection's fate, the upstream addresses, a denial's status.
	Detail string `json:"detail,omitempty"`
}

// Secret outcomes.
const (
	// SecretSubstituted: a request carrying the placeholder goes out
	// with the real value in its place.
	SecretSubstituted = "substituted"
	// SecretBlocked: a request carrying the placeholder is refused.
	SecretBlocked = "blocked"
	// SecretNotSent: the request does not get that far anyway.
	SecretNotSent = "not-sent"
	// SecretRaw: the flow is relayed raw (net.tcp-allow, or TLS in
	// net.mode=open without secrets, which never happens with one):
	// the placeholder goes out as it is, never the value.
	SecretRaw = "raw"
)

// SecretResult is what becomes of a request to the target that carries
// a secret's placeholder (in an Authorization header).
type SecretResult struct {
	Name    string   `json:"name"`
	Hosts   []string `json:"hosts"`
	Outcome string   `json:"outcome"`
	Reason  string   `json:"reason"`
	Hint    string   `json:"hint,omitempty"`
}

// lookupTimeout bounds each name lookup the tool makes itself (forwarded
// DNS); the policy bounds its own.
const lookupTimeout = 10 * time.Second

// Evaluate replays q through the policy the shim would build for it. An
// *InputError is bad input (annotations the shim would refuse, a host
// that is no host name); other errors are the host's (its addresses could
// not be read).
func Evaluate(ctx context.Context, cfg *config.Config, q Query, env Env) (*Report, error) {
	settings, err := oci.ParseAnnotations(q.Annotations, cfg.Operator())
	if err != nil {
		return nil, &InputError{"the shim would refuse to create this container: " + err.Error()}
	}
	rep := &Report{Target: q.Target.String(), Protocol: q.Target.Protocol, Policy: summarize(settings)}
	if q.Target.Protocol != ProtoTCP {
		rep.Method = q.Method
		if rep.Method == "" {
			rep.Method = http.MethodGet
		}
	}
	if settings.Mode == policy.NetModeNone {
		rep.step(StepNet, policy.Verdict{Reason: policy.KeyMode + "=none: the VM has no network interface"}, "")
		return rep.secretsNotSent(settings, "the VM has no network"), nil
	}
	// The decisions never look at a secret's value, only at its
	// placeholder: a dummy stands in, and no host source is read.
	values := make(map[string]string, len(settings.Secrets))
	for name, hosts := range settings.Secrets {
		// A binding the secret's host source does not allow fails the
		// create, as in the shim.
		if err := cfg.CheckSecretBinding(name, hosts); err != nil {
			return nil, &InputError{"the shim would refuse to create this container: " + err.Error()}
		}
		values[name] = "gondolin-policy-test-value-of-" + name
	}
	egress, err := cfg.Egress(settings.Rules, values)
	if err != nil {
		return nil, &InputError{err.Error()}
	}
	pc := egress.Config
	pc.HostAddrs = env.HostAddrs
	p, err := policy.NewPolicy(ctx, pc)
	if errors.Is(err, policy.ErrNoNetwork) {
		rep.step(StepNet, policy.Verdict{Reason: policy.KeyMode + "=none: the VM has no network interface"}, "")
		return rep.secretsNotSent(settings, "the VM has no network"), nil
	}
	if err != nil {
		return nil, fmt.Errorf("build the policy: %w", err)
	}
	resolver := env.Resolver
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	r := replay{
		p:         p,
		settings:  settings,
		rep:       rep,
		q:         q,
		dns:       resolver,
		overrides: egress.Overrides,
		facts: policy.StaticFacts{
			Synthetic: map[netip.Addr]string{},
			Forwarded: map[netip.Addr][]string{},
			Resolver:  config.PinnedResolver{Pins: egress.Overrides, Next: resolver},
		},
	}
	if err := r.run(ctx); err != nil {
		return nil, err
	}
	return rep, nil
}

// replay walks a guest's way to the target, one decision a step.
type replay struct {
	p         *policy.Policy
	settings  *oci.Settings
	rep       *Report
	q         Query
	dns       policy.Resolver
	overrides map[string][]netip.Addr
	facts     policy.StaticFacts
}

func (r *replay) run(ctx context.Context) error {
	t := r.q.Target
	dst, ok := t.IP()
	if !ok {
		var done bool
		var err error
		if dst, done, err = r.lookup(ctx); err != nil || done {
			return err
		}
	}
	if !dst.Is4() {
		r.rep.step(StepConnect, policy.Verdict{Reason: "the guest network is IPv4 only: the guest cannot connect to " + dst.String()}, "")
		r.rep.secretsNotSent(r.settings, "the guest cannot connect")
		return nil
	}
	c := r.p.DecideConnect(r.facts, netip.AddrPortFrom(dst, t.Port), policy.DefaultGateway())
	r.rep.step(StepConnect, c.Verdict, connectDetail(c))
	switch c.Action {
	case policy.TCPRefuse:
		r.rep.secretsNotSent(r.settings, "the connection is refused")
	case policy.TCPDNS:
		if t.Protocol != ProtoTCP {
			r.rep.step(StepRequest, policy.Verdict{Reason: "port 53 of every address is the shim's DNS server: an HTTP request there gets no answer"}, "")
			r.rep.secretsNotSent(r.settings, "port 53 is DNS")
		}
	case policy.TCPRaw:
		if r.upstream(ctx, c) && t.Protocol != ProtoTCP {
			r.rawSecrets(c.Reason)
		}
	case policy.TCPInspect:
		if t.Protocol == ProtoTCP {
			r.inspectedTCP(ctx, c)
			return nil
		}
		r.request(ctx, c.Flow)
	}
	return nil
}

// lookup replays the guest's DNS question for the target's host. It
// returns the address the guest would connect to, or done when the
// answer already decides.
func (r *replay) lookup(ctx context.Context) (dst netip.Addr, done bool, err error) {
	host := r.q.Target.Host
	d := r.p.DecideDNS(host)
	if !d.Valid {
		return netip.Addr{}, true, inputErrorf("host %q is not a host name or IP literal (letters, digits, '-' and '_' in dot-separated labels of at most 63)", host)
	}
	notSent := func(why string) (netip.Addr, bool, error) {
		r.rep.secretsNotSent(r.settings, why)
		return netip.Addr{}, true, nil
	}
	switch d.Action {
	case policy.DNSRefuse:
		r.rep.step(StepDNS, d.Verdict, "the guest gets NXDOMAIN; nothing is looked up on the host")
		return notSent("the name does not resolve")
	case policy.DNSLocalhost:
		r.rep.step(StepDNS, d.Verdict, "answered 127.0.0.1")
		r.rep.step(StepConnect, policy.Verdict{Reason: "127.0.0.1 is the guest's own loopback: nothing leaves the VM"}, "the host is "+policy.HostName)
		return notSent("nothing leaves the VM")
	case policy.DNSHost:
		gw := policy.DefaultGateway()
		r.rep.step(StepDNS, d.Verdict, "answered "+gw.String()+", the gateway, which stands for the host's loopback")
		return gw, false, nil
	case policy.DNSSynthesize:
		a := policy.FirstSyntheticAddr()
		r.facts.Synthetic[a] = d.Name
		r.rep.step(StepDNS, d.Verdict, "answered "+a.String()+" from the synthetic pool; nothing is looked up on the host")
		return a, false, nil
	case policy.DNSForward:
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		addrs, err := r.dns.LookupNetIP(lctx, "ip4", d.Name)
		cancel()
		if err == nil && len(addrs) == 0 {
			err = errors.New("no IPv4 address")
		}
		if err != nil {
			why := "forwarded DNS has no IPv4 address for " + d.Name + ": " + err.Error()
			if _, pinned := r.overrides[d.Name]; pinned {
				why += " (upstream_hosts pins the name for the shim's own connections only; forwarded DNS asks the upstream servers)"
			}
			r.rep.step(StepDNS, policy.Verdict{Reason: why}, "the guest's lookup fails")
			return notSent("the name does not resolve")
		}
		for i := range addrs {
			addrs[i] = addrs[i].Unmap()
			r.facts.Forwarded[addrs[i]] = append(r.facts.Forwarded[addrs[i]], d.Name)
		}
		r.rep.step(StepDNS, d.Verdict, "answered "+joinAddrs(addrs)+" by the upstream resolver; the guest connects to the first")
		return addrs[0], false, nil
	}
	return netip.Addr{}, true, fmt.Errorf("DNS decision %d for %s is not known to this tool", d.Action, host)
}

// upstream checks the addresses a raw flow would be relayed to, as the
// shim does before it dials; it reports whether they pass.
func (r *replay) upstream(ctx context.Context, c policy.ConnectDecision) bool {
	addrs, err := r.p.ConnectAddrs(ctx, r.facts, c.Flow, c.Host)
	if err != nil {
		r.rep.step(StepUpstream, policy.Verdict{Reason: err.Error()}, "the guest's connection is reset")
		r.rep.secretsNotSent(r.settings, "the connection is reset")
		return false
	}
	r.rep.step(StepUpstream, policy.Verdict{Allow: true, Reason: c.Reason}, "relayed raw for "+c.Host+", dialled at "+joinAddrs(addrs))
	return true
}

// inspectedTCP is a raw TCP target on a port the policy inspects: in
// mode open a protocol other than HTTP is relayed raw; in mode policy
// only HTTP or TLS to allowed hosts passes.
func (r *replay) inspectedTCP(ctx context.Context, c policy.ConnectDecision) {
	// The host a raw flow is relayed for, as the network names it.
	host := c.Flow.Name
	if host == "" {
		host = c.Flow.Dst.Addr().String()
	}
	if r.settings.Mode == policy.NetModeOpen {
		c.Host = host
		r.upstream(ctx, c)
		return
	}
	hp := net.JoinHostPort(host, strconv.Itoa(int(c.Flow.Dst.Port())))
	r.rep.Decision, r.rep.Allowed = DecisionInspected, false
	r.rep.Reason = "only HTTP or TLS to hosts in " + policy.KeyAllow + " passes on this port (" + c.Reason + "); another protocol is refused"
	r.rep.Hint = "raw TCP needs " + policy.KeyTCPAllow + "=" + hp + "; to test HTTP or TLS, give a URL"
}

// request replays the guest's HTTP request on the inspected flow, then
// the same request carrying each secret's placeholder.
func (r *replay) request(ctx context.Context, fl policy.Flow) {
	t := r.q.Target
	if t.Protocol == ProtoHTTPS {
		fl.TLS = true
		if _, isIP := t.IP(); !isIP {
			fl.SNI = t.Host // as curl sends it; no SNI for an IP literal
		}
	}
	req := r.newRequest(ctx)
	d := r.p.DecideRequest(ctx, r.facts, fl, req)
	detail := ""
	if d.Allow {
		detail = "sent to " + joinAddrs(d.Addrs)
		if len(d.Secrets) > 0 {
			detail += " with the values of " + strings.Join(d.Secrets, ", ")
		}
		if t.Protocol == ProtoHTTPS && r.settings.Mode == policy.NetModeOpen && len(r.settings.Secrets) == 0 {
			detail += " (in net.mode=open without secrets TLS is not intercepted: the guest's TLS is relayed as it is)"
		}
	} else {
		detail = "answered " + strconv.Itoa(d.Status) + " " + http.StatusText(d.Status)
	}
	r.rep.step(StepRequest, d.Verdict, detail)
	for _, name := range secretNames(r.settings) {
		res := SecretResult{Name: name, Hosts: r.rep.Policy.Secrets[name]}
		if !d.Allow {
			res.Outcome, res.Reason = SecretNotSent, "the request is denied whatever it carries"
			r.rep.Secrets = append(r.rep.Secrets, res)
			continue
		}
		ph, _ := r.p.Placeholder(name)
		sr := r.newRequest(ctx)
		sr.Header.Set("Authorization", "Bearer "+ph)
		sd := r.p.DecideRequest(ctx, r.facts, fl, sr)
		switch {
		case sd.Allow && slices.Contains(sd.Secrets, name):
			res.Outcome, res.Reason = SecretSubstituted, "the target is one of the secret's hosts: the placeholder is replaced by the value"
		case sd.Allow:
			res.Outcome, res.Reason = SecretRaw, "the request goes out with the placeholder as it is"
		default:
			res.Outcome, res.Reason, res.Hint = SecretBlocked, sd.Reason, sd.Hint
		}
		r.rep.Secrets = append(r.rep.Secrets, res)
	}
}

func (r *replay) newRequest(ctx context.Context) *http.Request {
	t := r.q.Target
	method := r.q.Method
	if method == "" {
		method = http.MethodGet
	}
	// NewRequest sets Host from the URL, port included when written, as
	// curl sends it.
	req, err := http.NewRequestWithContext(ctx, method, t.URL.String(), nil)
	if err != nil {
		// The URL and method were checked; a failure here is a bug.
		panic(fmt.Sprintf("policyquery: request for %s: %v", t.URL, err))
	}
	req.Header = r.q.Header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	return req
}

// rawSecrets: a flow relayed raw is never read, so no placeholder in it
// is replaced.
func (r *replay) rawSecrets(why string) {
	for _, name := range secretNames(r.settings) {
		r.rep.Secrets = append(r.rep.Secrets, SecretResult{
			Name: name, Hosts: r.rep.Policy.Secrets[name], Outcome: SecretRaw,
			Reason: "the flow is relayed raw (" + why + "), never read: the placeholder goes out as it is, never the value",
		})
	}
}

// step records a decision; the last one recorded decides the report.
func (rep *Report) step(name string, v policy.Verdict, detail string) {
	rep.Steps = append(rep.Steps, Step{Name: name, Allowed: v.Allow, Reason: v.Reason, Hint: v.Hint, Detail: detail})
	rep.Allowed, rep.Reason, rep.Hint = v.Allow, v.Reason, v.Hint
	rep.Decision = DecisionDenied
	if v.Allow {
		rep.Decision = DecisionAllowed
	}
}

func (rep *Report) secretsNotSent(settings *oci.Settings, why string) *Report {
	for _, name := range secretNames(settings) {
		rep.Secrets = append(rep.Secrets, SecretResult{Name: name, Hosts: rep.Policy.Secrets[name], Outcome: SecretNotSent, Reason: why})
	}
	return rep
}

func secretNames(s *oci.Settings) []string {
	names := make([]string, 0, len(s.Secrets))
	for name := range s.Secrets {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func summarize(s *oci.Settings) PolicySummary {
	ps := PolicySummary{
		Mode:          string(s.Mode),
		DNS:           string(s.DNS),
		Policies:      s.Policies,
		Allow:         patterns(s.Allow),
		AllowInternal: patterns(s.AllowInternal),
		TCPAllow:      patterns(s.TCPAllow),
	}
	for _, p := range s.AllowInternalRanges {
		ps.AllowInternal = append(ps.AllowInternal, p.String())
	}
	if len(s.Secrets) > 0 {
		ps.Secrets = make(map[string][]string, len(s.Secrets))
		for name, hosts := range s.Secrets {
			ps.Secrets[name] = patterns(hosts)
		}
	}
	return ps
}

func patterns(ps []policy.HostPattern) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func connectDetail(c policy.ConnectDecision) string {
	dst := c.Flow.Dst.String()
	if c.Flow.Synthetic && c.Flow.Name != "" {
		dst += " (" + c.Flow.Name + ")"
	}
	switch c.Action {
	case policy.TCPRefuse:
		return dst + ": the guest's SYN is answered with a reset"
	case policy.TCPDNS:
		return dst + ": answered by the shim's DNS server"
	case policy.TCPRaw:
		return dst + ": relayed raw for " + c.Host
	default:
		return dst + ": accepted and inspected (HTTP is served, TLS intercepted, each request decided)"
	}
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
