// Package policy is a guest's network: a userspace TCP/IP stack (gVisor
// netstack) on the VM's NIC that ends every guest flow in the shim and
// decides it against the container's egress policy. There is no tap
// device, no NAT and no host routing change: allowed flows are re-made by
// the shim, through Config.Dialer, from the container's network namespace.
//
// # Using it
//
//	cfg := rules.Config(secretValues) // the user's Rules + real secret values
//	cfg.Container, cfg.CAStateDir, cfg.AuditLog = id, dir, auditFile
//	cfg.Dialer, cfg.Resolver = dialInNetns, resolverInNetns        // optional
//	n, err := policy.NewNetwork(ctx, cfg)  // errors.Is(err, policy.ErrNoNetwork) for net.mode=none
//	gc := n.GuestConfig()                  // eth0 for the agent and the VMM's NIC
//	// accept QEMU's connection on sock, then
//	n.AttachStream(conn)
//	// the guest's env gets n.Placeholders() for each secret; the guest trusts n.CACertPEM()
//	defer n.Close()
//
// # What the guest sees
//
// eth0 192.168.127.3/24, gateway and DNS 192.168.127.1, MTU 65000, MAC
// 02:00:00:00:00:01. IPv4 only: IPv6 is not offered (the stack has no IPv6,
// so guest IPv6 frames are dropped; the agent should disable IPv6 on eth0).
// Upstream connections made for the guest may use IPv6 under the same
// checks.
//
// # Decisions
//
//   - DNS (UDP and TCP port 53, to any address) is answered here. synthetic
//     (default): names in net.allow or net.tcp-allow get a stable address
//     from 198.19.0.0/16 that maps back to the name, other names NXDOMAIN,
//     and nothing is looked up on the host. trusted: allowed names are
//     forwarded to the upstream resolvers, others NXDOMAIN before any
//     lookup. open: everything is forwarded.
//   - TCP to a net.tcp-allow host:port is passed through raw (the upstream
//     is dialled before the guest's handshake completes).
//   - TCP the allowlist could cover (ports 80/443 for entries without a
//     port, the entry's port otherwise) is classified by its first bytes:
//     plain HTTP is served by an HTTP server here, TLS is terminated with a
//     leaf certificate minted from the host CA (ALPN h2 and http/1.1) and
//     the decrypted HTTP served the same way. Every request is checked
//     (method, host, port, path) and re-originated with normal certificate
//     verification; bodies stream, keep-alive and HTTP/2 work to the guest,
//     WebSocket upgrades pass, redirects are returned, CONNECT and other
//     upgrades are not allowed. A denied request gets a 403 naming the host
//     and the annotation that would allow it.
//   - Anything else gets a TCP RST, or ICMP port unreachable for UDP.
//   - Internal addresses (private, loopback, link-local and metadata,
//     CGNAT, benchmark, multicast, reserved, unspecified, and their
//     IPv4-mapped, NAT64 and 6to4 forms) are refused on every resolved
//     address unless net.allow-internal names them, and the upstream is
//     dialled at exactly the addresses that were checked.
//   - net.mode=open allows any public destination (any port, raw TCP and
//     UDP too) but still refuses internal ones; TLS is intercepted there
//     only when secrets are configured.
//
// Secrets are random placeholders in the guest (GONDOLIN_SECRET_ and 48 hex
// digits). In requests to a host the secret is allowed for, the placeholder
// is replaced by the real value in header values (inside Basic credentials
// too) and in the query string; a placeholder or real value in a request to
// any other host blocks it with a 403. Bodies are not rewritten: a
// request's body and trailers are scanned for secrets not bound to its
// target (a find ends the request), and every value form coming back is
// turned into its placeholder. Every decision is one JSON AuditRecord
// line, with secrets redacted from it and from all log output.
//
// # The decision API
//
// Every decision above is a method of Policy in decide.go, a function of
// the settings, the question and what a Facts answers (the synthetic
// name of an address, the names forwarded DNS gave it, a name's
// addresses): DecideConnect for a new TCP flow (refuse, DNS, raw with
// ConnectAddrs, or inspect), DecideRequest for each HTTP request (the
// target, the checked addresses to dial, the secrets to substitute),
// DecideDNS for a question and DecideUDP (with UDPAddrs) for a UDP flow.
// Each returns a Verdict: allowed or not, the rule that decided (the
// audit reason) and, for a denial, what would allow it. Decisions dial
// nothing, keep no state and write no audit record; the network code
// (tcp.go, udp.go, dns.go, proxy.go) carries them out and audits them,
// and patterns.go classifies addresses. NewPolicy builds the same Policy
// without a network, for a tool asking whether something would be
// allowed (policyquery does this for `gondolin policy test`):
//
//	p, err := policy.NewPolicy(ctx, rules.Config(values))
//	synth := policy.FirstSyntheticAddr() // what synthetic DNS gives the first name
//	facts := policy.StaticFacts{Synthetic: map[netip.Addr]string{synth: host}} // resolves with net.DefaultResolver
//	c := p.DecideConnect(facts, netip.AddrPortFrom(synth, 443), policy.DefaultGateway()) // c.Action, c.Allow, c.Reason, c.Hint
//	d := p.DecideRequest(ctx, facts, policy.Flow{Dst: c.Flow.Dst, Synthetic: true, Name: host, TLS: true}, req)
//	// d.Allow, d.Reason, d.Hint, d.Addrs, d.Secrets
package policy
