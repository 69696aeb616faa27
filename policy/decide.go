package policy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Every egress decision is made in this file, from the settings (Policy),
// the question (a destination, a request, a DNS name) and what Facts
// answers: a decision dials nothing, keeps no state and writes no audit
// record. The network code (tcp.go, udp.go, dns.go, proxy.go) carries the
// decisions out and audits them; address classification is in patterns.go.

// Policy is one guest's egress policy: net.mode, net.dns, net.allow,
// net.allow-internal, net.tcp-allow and the secrets' hosts, with the
// host's own addresses (always internal).
type Policy struct {
	mode                NetMode
	dns                 DNSMode
	allow               []HostPattern
	allowInternal       []HostPattern
	allowInternalRanges []netip.Prefix
	tcpAllow            []HostPattern
	secrets             *secretSet
	hostAddrs           *hostAddrSet
}

// newPolicy is the policy of a defaulted Config. hostAddrs may be nil (no
// host addresses beyond the internal ranges), secrets nil (no secrets).
func newPolicy(c *Config, hostAddrs *hostAddrSet, secrets *secretSet) *Policy {
	if secrets == nil {
		secrets = newSecretSet(nil)
	}
	return &Policy{
		mode:                c.Mode,
		dns:                 c.DNS,
		allow:               c.Allow,
		allowInternal:       c.AllowInternal,
		allowInternalRanges: c.AllowInternalRanges,
		tcpAllow:            c.TCPAllow,
		secrets:             secrets,
		hostAddrs:           hostAddrs,
	}
}

// NewPolicy builds the decisions for cfg's policy fields (Mode, DNS, Allow,
// AllowInternal, AllowInternalRanges, TCPAllow, Secrets, HostAddrs) without
// a network, for a tool asking what a guest would be allowed: it makes the
// same decisions as NewNetwork's network. The secrets get fresh
// placeholders (Placeholder). It returns ErrNoNetwork for net.mode=none,
// where nothing is allowed.
func NewPolicy(ctx context.Context, cfg Config) (*Policy, error) {
	if err := cfg.checkModes(); err != nil {
		return nil, err
	}
	if err := cfg.checkLists(); err != nil {
		return nil, err
	}
	var hostAddrs *hostAddrSet
	if cfg.HostAddrs != nil {
		warn := func(string, ...any) {}
		if cfg.Logger != nil {
			warn = cfg.Logger.Warn
		}
		var err error
		if hostAddrs, err = newHostAddrSet(ctx, cfg.HostAddrs, warn); err != nil {
			return nil, err
		}
	}
	return newPolicy(&cfg, hostAddrs, newSecretSet(cfg.Secrets)), nil
}

// Placeholder returns the value the guest sees in place of secret name.
func (p *Policy) Placeholder(name string) (string, bool) {
	ph, ok := p.secrets.placeholders()[name]
	return ph, ok
}

// Facts answers what a decision needs to know beyond the settings. The
// network answers from its synthetic DNS pool, the forwarded DNS answers
// it recorded and its cached resolver; a tool may answer from a resolver
// alone.
type Facts interface {
	// SyntheticName is the name a synthetic DNS address was handed out
	// for; false if it never was.
	SyntheticName(a netip.Addr) (string, bool)
	// DNSNames lists the names forwarded DNS (net.dns=trusted|open) told
	// the guest a belongs to, while their answers are fresh.
	DNSNames(a netip.Addr) []string
	// Resolve returns host's addresses for an upstream connection (an IP
	// literal is its own address). It is only asked about allowed hosts.
	Resolve(ctx context.Context, host string) ([]netip.Addr, error)
}

// Verdict is what a decision comes to: allowed or not, the rule that
// decided (the audit record's reason), and for a denial what would allow
// it ("" if nothing would).
type Verdict struct {
	Allow  bool
	Reason string
	Hint   string
}

func allowed(reason string) Verdict { return Verdict{Allow: true, Reason: reason} }

func denied(reason, hint string) Verdict { return Verdict{Reason: reason, Hint: hint} }

// auditReason is the reason with its hint, for an audit record.
func (v Verdict) auditReason() string {
	if v.Hint == "" {
		return v.Reason
	}
	return v.Reason + "; " + v.Hint
}

// Flow is a guest TCP flow as the decisions see it.
type Flow struct {
	// Dst is the address the guest connected to.
	Dst netip.AddrPort
	// Synthetic marks a destination in the synthetic DNS pool; Name is
	// then the host it stands for ("" if the pool never handed it out).
	Synthetic bool
	Name      string
	// TLS marks a flow whose TLS the shim terminates; SNI is the
	// normalised server name of its ClientHello, if any.
	TLS bool
	SNI string
}

// TCPAction is what becomes of a new guest TCP flow.
type TCPAction int

const (
	// TCPRefuse answers the SYN with a RST.
	TCPRefuse TCPAction = iota
	// TCPDNS answers DNS over TCP here, each question under DecideDNS.
	TCPDNS
	// TCPRaw relays the flow as raw TCP for ConnectDecision.Host, at
	// the addresses ConnectAddrs checks.
	TCPRaw
	// TCPInspect completes the handshake and reads the first bytes:
	// TLS is intercepted, HTTP served, each request under DecideRequest.
	TCPInspect
)

// ConnectDecision is the decision on a new guest TCP flow, made before
// its handshake completes so that what can never be allowed gets a RST.
type ConnectDecision struct {
	Verdict
	Action TCPAction
	Flow   Flow
	// Host is what a raw flow is relayed for: the net.tcp-allow entry's
	// host, or the destination IP.
	Host string
}

// DecideConnect decides a guest's TCP connection to dst; gateway is the
// host side of the guest link: DNS on port 53, HostName on the others.
func (p *Policy) DecideConnect(facts Facts, dst netip.AddrPort, gateway netip.Addr) ConnectDecision {
	d := ConnectDecision{Flow: Flow{Dst: dst}}
	refuse := func(reason, hint string) ConnectDecision {
		d.Action, d.Verdict = TCPRefuse, denied(reason, hint)
		return d
	}
	ip, port := dst.Addr(), dst.Port()
	if synthPrefix.Contains(ip) {
		d.Flow.Synthetic = true
		name, ok := facts.SyntheticName(ip)
		if !ok {
			return refuse("address was not handed out by synthetic DNS", "")
		}
		d.Flow.Name = name
	}
	if ip == gateway && port != 53 {
		// The gateway stands for the host (HostName): decided by that
		// name, like a synthetic address by its own.
		d.Flow.Synthetic, d.Flow.Name = true, HostName
	}
	if port == 53 {
		// DNS to any address is answered here, under the DNS policy.
		d.Action, d.Verdict = TCPDNS, allowed("DNS is answered by the shim")
		return d
	}
	if !d.Flow.Synthetic && p.addrBlocked("", ip, port) && !p.recordedInternalAllowed(facts, ip, port) {
		return refuse("internal address", "to reach it, name it in "+KeyAllowInternal)
	}
	if host, ok := p.tcpAllowTarget(facts, d.Flow); ok {
		d.Action, d.Verdict, d.Host = TCPRaw, allowed(KeyTCPAllow), host
		return d
	}
	if p.mode == NetModeOpen {
		d.Action, d.Verdict = TCPInspect, allowed("net.mode=open")
		return d
	}
	name := d.Flow.Name
	if d.Flow.Synthetic {
		if allowMatch(p.allow, name, port) {
			d.Action, d.Verdict = TCPInspect, allowed("host in "+KeyAllow)
			return d
		}
		return refuse("port "+strconv.Itoa(int(port))+" of "+name+" is not in "+KeyAllow,
			"allow it with "+KeyAllow+"="+hostPort(name, port)+" (HTTP/TLS) or "+KeyTCPAllow+"="+hostPort(name, port)+" (raw TCP)")
	}
	for _, e := range p.allow {
		if e.Port == port || e.Port == 0 && webPort(port) {
			// Each request is then checked for its host.
			d.Action, d.Verdict = TCPInspect, allowed("a "+KeyAllow+" entry covers port "+strconv.Itoa(int(port)))
			return d
		}
	}
	return refuse("no "+KeyAllow+" entry covers port "+strconv.Itoa(int(port)), "")
}

// recordedInternalAllowed reports whether an internal address the guest
// learnt from forwarded DNS belongs to a name net.allow-internal names.
func (p *Policy) recordedInternalAllowed(facts Facts, ip netip.Addr, port uint16) bool {
	if p.dns == DNSSynthetic {
		return false
	}
	for _, name := range facts.DNSNames(ip) {
		if p.internalAllowed(name, ip, port) {
			return true
		}
	}
	return false
}

// tcpAllowTarget finds the net.tcp-allow entry a flow is for. With
// synthetic DNS the destination address is only trusted when it is a
// synthetic one (then its name decides) or an allowed IP literal; with
// forwarded DNS an address the guest was given for an allowed name counts.
func (p *Policy) tcpAllowTarget(facts Facts, fl Flow) (string, bool) {
	port := fl.Dst.Port()
	if fl.Synthetic {
		return fl.Name, matchAny(p.tcpAllow, fl.Name, port)
	}
	ip := fl.Dst.Addr()
	var names []string
	looked := false
	for _, e := range p.tcpAllow {
		if e.Port != port {
			continue
		}
		if e.IP.IsValid() && e.IP.Unmap() == ip {
			return ip.String(), true
		}
		if e.Host != "" && p.dns != DNSSynthetic {
			if !looked {
				names, looked = facts.DNSNames(ip), true
			}
			if slices.Contains(names, e.Host) {
				return e.Host, true
			}
		}
	}
	return "", false
}

// ConnectAddrs returns the addresses a flow passed through raw (TCPRaw, or
// raw in net.mode=open) for host may be dialled at, every one checked: a
// synthetic destination's name is resolved here, any other destination is
// dialled as the guest chose it.
func (p *Policy) ConnectAddrs(ctx context.Context, facts Facts, fl Flow, host string) ([]netip.Addr, error) {
	port := fl.Dst.Port()
	if fl.Synthetic {
		addrs, d := p.resolveChecked(ctx, facts, host, port)
		if d != nil {
			return nil, errors.New(d.reason)
		}
		return addrs, nil
	}
	ip := fl.Dst.Addr()
	if p.addrBlocked(host, ip, port) {
		return nil, errors.New("internal address " + ip.String())
	}
	return []netip.Addr{ip}, nil
}

// sniffTimeout is how long an inspected flow's first bytes are waited
// for. In net.mode=open on ports other than 80 and 443 it is short: a
// silent client (a server-speaks-first protocol) is then passed raw.
func (p *Policy) sniffTimeout(port uint16) time.Duration {
	if p.mode == NetModeOpen && !webPort(port) {
		return openSniffTimeout
	}
	return sniffTimeout
}

// sniffAction is what becomes of an inspected flow once its first bytes
// are read.
type sniffAction int

const (
	sniffRefuse sniffAction = iota
	// sniffTLS terminates the guest's TLS, then serves HTTP.
	sniffTLS
	// sniffHTTP serves plain HTTP.
	sniffHTTP
	// sniffRaw passes the flow raw (net.mode=open).
	sniffRaw
)

// decideSniffed decides an inspected flow by what its first bytes look
// like (kind), or that none came (timedOut). TLS is intercepted in mode
// policy, and in mode open only when there are secrets to substitute.
func (p *Policy) decideSniffed(fl Flow, kind protoKind, timedOut bool) (sniffAction, Verdict) {
	switch {
	case kind == protoTLS && (p.mode == NetModePolicy || len(p.secrets.list) > 0):
		return sniffTLS, allowed("TLS is intercepted")
	case kind == protoHTTP:
		return sniffHTTP, allowed("HTTP is served")
	case p.mode == NetModeOpen:
		// Open mode without secrets: TLS and everything else pass raw.
		return sniffRaw, allowed("net.mode=open")
	case timedOut:
		return sniffRefuse, denied("no data from the client", "")
	}
	host := fl.Name
	if host == "" {
		host = fl.Dst.Addr().String()
	}
	return sniffRefuse, denied("not HTTP or TLS", "raw TCP needs "+KeyTCPAllow+"="+hostPort(host, fl.Dst.Port()))
}

// denial is why a request is refused and what would allow it.
type denial struct {
	status int
	reason string
	hint   string
}

// RequestDecision is the decision on one guest HTTP request.
type RequestDecision struct {
	Verdict
	// Status is the HTTP status of a denial's response.
	Status int
	// Scheme, Host and Port are the request's target (Host is the Host
	// header as sent when it is not a valid one).
	Scheme string
	Host   string
	Port   uint16
	// Addrs are the checked addresses the request may be sent to.
	Addrs []netip.Addr
	// Secrets names the secrets bound to the target that the request
	// carries: their placeholders are replaced by their values.
	Secrets []string
	use     []*secret
}

// normalizeRequest removes from a guest request what is never sent on,
// before it is decided: the userinfo of an absolute-form target, and an
// Upgrade other than WebSocket over HTTP/1 (h2c and the like would escape
// per-request checks, so the request goes on plain).
func normalizeRequest(r *http.Request) {
	r.URL.User = nil
	if up := r.Header.Get("Upgrade"); up != "" && (r.ProtoMajor != 1 || !strings.EqualFold(up, "websocket")) {
		r.Header.Del("Upgrade")
	}
}

// DecideRequest decides request r that came on flow fl; r is read, never
// changed (the network normalises it first with normalizeRequest).
// CONNECT is never allowed; in mode policy the target must be in
// net.allow; a secret may only go to a host it is bound to; and the
// addresses are those upstreamAddrs checks.
func (p *Policy) DecideRequest(ctx context.Context, facts Facts, fl Flow, r *http.Request) RequestDecision {
	d := RequestDecision{Scheme: "http"}
	if fl.TLS {
		d.Scheme = "https"
	}
	deny := func(status int, reason, hint string) RequestDecision {
		d.Verdict, d.Status = denied(reason, hint), status
		return d
	}
	host, port, ok := fl.requestTarget(r)
	if !ok {
		d.Host = r.Host
		return deny(http.StatusBadRequest, "invalid Host "+strconv.Quote(r.Host), "")
	}
	d.Host, d.Port = host, port
	if r.Method == http.MethodConnect {
		return deny(http.StatusForbidden, "CONNECT tunnels are not allowed", "")
	}
	if p.mode == NetModePolicy && !allowMatch(p.allow, host, port) {
		return deny(http.StatusForbidden, hostPort(host, port)+" is not in "+KeyAllow,
			"To allow it, add it to the container annotation "+KeyAllow+" (for example "+KeyAllow+"="+allowExample(host, port, fl.TLS)+").")
	}
	use, blocked := p.secrets.find(r, d.Scheme, host, port)
	if blocked != "" {
		return deny(http.StatusForbidden,
			"the request carries secret "+blocked+", which may not be sent to "+d.Scheme+"://"+hostPort(host, port),
			"The hosts it may be sent to are set by the annotation "+KeySecretPrefix+blocked+".")
	}
	addrs, den := p.upstreamAddrs(ctx, facts, fl, host, port, p.mode == NetModePolicy || len(use) > 0)
	if den != nil {
		return deny(den.status, den.reason, den.hint)
	}
	reason := "host in " + KeyAllow
	if p.mode == NetModeOpen {
		reason = "net.mode=open"
	}
	d.Verdict, d.Addrs, d.use = allowed(reason), addrs, use
	for _, sec := range use {
		d.Secrets = append(d.Secrets, sec.name)
	}
	return d
}

// requestTarget is the host and port a request is for: its Host (or
// absolute URL) with the flow's destination port as the default port; the
// SNI, synthetic name or destination address stand in for a missing Host.
func (fl Flow) requestTarget(r *http.Request) (string, uint16, bool) {
	h := r.Host
	if h == "" {
		switch {
		case fl.SNI != "":
			h = fl.SNI
		case fl.Name != "":
			h = fl.Name
		default:
			h = fl.Dst.Addr().String()
		}
	}
	port := fl.Dst.Port()
	if i := strings.LastIndexByte(h, ':'); i > strings.LastIndexByte(h, ']') {
		p, err := strconv.ParseUint(h[i+1:], 10, 16)
		if err != nil || p == 0 {
			return "", 0, false
		}
		port = uint16(p)
		h = h[:i]
	}
	host, ok := normalizeHost(h)
	return host, port, ok
}

// upstreamAddrs decides which addresses a request for host:port may be
// sent to. trustHost is set when the decision rests on the host (mode
// policy, or a secret is being substituted). A synthetic destination
// stands for its name, so the host is resolved here and every address
// checked; so it is with synthetic DNS when the host matters, since the
// guest's own choice of address is not trusted then. With forwarded DNS
// the guest's destination is used, but only if it is an address of the
// host when the host matters; in mode open without secrets the guest's
// public destination is used as it is. An internal address is never used
// unless net.allow-internal names it.
func (p *Policy) upstreamAddrs(ctx context.Context, facts Facts, fl Flow, host string, port uint16, trustHost bool) ([]netip.Addr, *denial) {
	if fl.Synthetic || p.dns == DNSSynthetic && trustHost {
		return p.resolveChecked(ctx, facts, host, port)
	}
	ip := fl.Dst.Addr()
	if trustHost && !isAddrOf(ctx, facts, ip, host) {
		return nil, &denial{http.StatusForbidden, "the guest connected to " + ip.String() + ", which is not an address of " + host, ""}
	}
	if p.addrBlocked(host, ip, port) {
		return nil, internalDenial(host, ip)
	}
	return []netip.Addr{ip}, nil
}

func internalDenial(host string, a netip.Addr) *denial {
	return &denial{http.StatusForbidden, host + " resolves to internal address " + a.String(),
		"To allow it, name it in the annotation " + KeyAllowInternal + " (a host, IP or CIDR)."}
}

// resolveChecked resolves host and refuses it if any of its addresses is
// internal. The upstream connection is made to exactly these addresses.
func (p *Policy) resolveChecked(ctx context.Context, facts Facts, host string, port uint16) ([]netip.Addr, *denial) {
	addrs := []netip.Addr{hostLoopback}
	if host != HostName {
		var err error
		if addrs, err = facts.Resolve(ctx, host); err != nil {
			return nil, &denial{http.StatusBadGateway, "cannot resolve " + host + ": " + err.Error(), ""}
		}
	}
	for _, a := range addrs {
		if p.addrBlocked(host, a, port) {
			return nil, internalDenial(host, a)
		}
	}
	return addrs, nil
}

// isAddrOf reports whether ip is an address of host: the host's own IP
// literal, an address forwarded DNS gave the guest for it, or one it
// resolves to.
func isAddrOf(ctx context.Context, facts Facts, ip netip.Addr, host string) bool {
	if lit, err := netip.ParseAddr(host); err == nil {
		return lit.Unmap() == ip
	}
	if slices.Contains(facts.DNSNames(ip), host) {
		return true
	}
	addrs, err := facts.Resolve(ctx, host)
	if err != nil {
		return false
	}
	return slices.Contains(addrs, ip)
}

func allowExample(host string, port uint16, tls bool) string {
	if (tls && port == 443) || (!tls && port == 80) {
		return host
	}
	return hostPort(host, port)
}

func hostPort(host string, port uint16) string {
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// DNSAction is how a DNS question is answered.
type DNSAction int

const (
	// DNSRefuse answers NXDOMAIN; nothing is looked up.
	DNSRefuse DNSAction = iota
	// DNSLocalhost answers localhost names with 127.0.0.1, unaudited.
	DNSLocalhost
	// DNSHost answers HostName's A question with the gateway address.
	DNSHost
	// DNSSynthesize answers an A question with the name's address from
	// the synthetic pool (other types with no records).
	DNSSynthesize
	// DNSForward forwards the question unchanged to the upstream
	// resolvers.
	DNSForward
)

// DNSDecision is the decision on one DNS question.
type DNSDecision struct {
	Verdict
	Action DNSAction
	// Name is the normalised name; Valid is false when the question's
	// name is not a plausible host name (then Name is "").
	Name  string
	Valid bool
}

// DecideDNS decides a guest's DNS question for qname (as asked, in any
// case, with or without its trailing dot). synthetic (default): allowed
// names get a synthetic address, nothing is looked up on the host.
// trusted: allowed names are forwarded, others refused before any lookup.
// open: everything is forwarded.
func (p *Policy) DecideDNS(qname string) DNSDecision {
	name, valid := normalizeHost(qname)
	d := DNSDecision{Name: name, Valid: valid}
	if valid && isLocalhost(name) {
		d.Action, d.Verdict = DNSLocalhost, allowed("localhost")
		return d
	}
	if valid && name == HostName {
		// Answered here in every DNS mode: no upstream resolver knows it.
		if p.dns != DNSOpen && !p.nameAllowed(name) {
			d.Action, d.Verdict = DNSRefuse, denied("name not in "+KeyAllow, "allow it with "+KeyAllow+" or "+KeyTCPAllow+" and "+KeyAllowInternal+"=127.0.0.1")
			return d
		}
		d.Action, d.Verdict = DNSHost, allowed("the host")
		return d
	}
	switch p.dns {
	case DNSSynthetic:
		if !valid || !p.nameAllowed(name) {
			d.Action, d.Verdict = DNSRefuse, denied("name not in "+KeyAllow, "")
			return d
		}
		d.Action, d.Verdict = DNSSynthesize, allowed("synthetic answer")
		return d
	case DNSTrusted:
		// The allowlist is checked before anything leaves the host.
		if !valid || !p.nameAllowed(name) {
			d.Action, d.Verdict = DNSRefuse, denied("name not in "+KeyAllow, "")
			return d
		}
	}
	d.Action, d.Verdict = DNSForward, allowed("forwarded to upstream resolver")
	return d
}

// nameAllowed reports whether DNS may answer for name: any host in
// net.allow or net.tcp-allow (ports aside), or anything in mode open.
func (p *Policy) nameAllowed(name string) bool {
	if p.mode == NetModeOpen {
		return true
	}
	return matchAnyHost(p.allow, name) || matchAnyHost(p.tcpAllow, name)
}

func isLocalhost(name string) bool {
	return name == "localhost" || strings.HasSuffix(name, ".localhost")
}

// UDPAction is what becomes of a new guest UDP flow.
type UDPAction int

const (
	// UDPRefuse answers ICMP port unreachable.
	UDPRefuse UDPAction = iota
	// UDPDNS answers DNS here, each question under DecideDNS.
	UDPDNS
	// UDPRelay relays the datagrams to the addresses UDPAddrs checks.
	UDPRelay
)

// UDPDecision is the decision on a new guest UDP flow.
type UDPDecision struct {
	Verdict
	Action UDPAction
	// Name is the host a synthetic destination stands for.
	Name string
	// Quiet: the refusal is not audited (an address synthetic DNS never
	// handed out).
	Quiet bool
}

// DecideUDP decides a guest's UDP flow to dst: DNS (port 53 to any
// address) is answered here; in mode open other UDP to public addresses
// is relayed; everything else is refused.
func (p *Policy) DecideUDP(facts Facts, dst netip.AddrPort) UDPDecision {
	var d UDPDecision
	if dst.Port() == 53 {
		d.Action, d.Verdict = UDPDNS, allowed("DNS is answered by the shim")
		return d
	}
	if p.mode != NetModeOpen {
		d.Verdict = denied("UDP other than DNS is not allowed in net.mode=policy", "")
		return d
	}
	if synthPrefix.Contains(dst.Addr()) {
		name, ok := facts.SyntheticName(dst.Addr())
		if !ok {
			d.Verdict, d.Quiet = denied("address was not handed out by synthetic DNS", ""), true
			return d
		}
		d.Name = name
	} else if p.addrBlocked("", dst.Addr(), dst.Port()) {
		d.Verdict = denied("internal address", "to reach it, name it in "+KeyAllowInternal)
		return d
	}
	d.Action, d.Verdict = UDPRelay, allowed("net.mode=open")
	return d
}

// UDPAddrs returns the checked addresses a relayed UDP flow to dst (for
// name, when it is a synthetic destination) may be sent to.
func (p *Policy) UDPAddrs(ctx context.Context, facts Facts, dst netip.AddrPort, name string) ([]netip.Addr, error) {
	if name == "" {
		return []netip.Addr{dst.Addr()}, nil
	}
	addrs, d := p.resolveChecked(ctx, facts, name, dst.Port())
	if d != nil {
		return nil, errors.New(d.reason)
	}
	return addrs, nil
}
