package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/time/rate"

	"github.com/earendil-works/gondolin-containerd/config"
	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// Ingress: every TCP port the guest listens on (on any address but
// loopback) gets a listener on the same port in the container's network
// namespace, which forwards connections into the guest through the
// userspace network; every UDP port a guest socket is bound to gets a
// socket there that relays datagrams, one flow per client. So a published port (Docker's -p, which DNATs to the
// container's address in that namespace) and other containers on the same
// network reach the guest's server, as they would a runc container's.
//
// The port list is the guest's word, and the guest is hostile: the shim
// (root) publishes at most limits.published_ports of it, acts on changes at
// most limits.guest_events_per_second times a second, and never binds a
// port below 1024 unless the namespace is the container's own and its
// spec lets it bind such ports (see ingressRulesFor).

// listenersPoll bounds one WaitListeners call: the agent learns of the
// deadline and returns, so no call outlives the container for long.
const listenersPoll = 30 * time.Second

// privilegedPorts is the host's privileged range: ports below it are
// trusted by other software to belong to root.
const privilegedPorts = 1024

// refusalLogInterval spaces the summaries of refused ports: a guest that
// keeps changing its list gets one log line a minute, not one per port.
const refusalLogInterval = time.Minute

// publishListeners follows the guest's listening ports until the container
// stops or its VM goes away.
func (c *Container) publishListeners() {
	ctx, cancel := c.runningContext()
	defer cancel()
	entry := log.G(ctx).WithField("container", c.ID)
	limits := config.DefaultLimits()
	if c.rt != nil && c.rt.cfg.Runtime != nil {
		// A config file cannot turn a limit off (config.Limits refuses 0);
		// a Config built in code without [limits] gets the defaults.
		if l := c.rt.cfg.Runtime.Limits; l.PublishedPorts > 0 && l.GuestEventsPerSecond > 0 && l.TCPFlows > 0 && l.UDPFlows > 0 {
			limits = l
		}
	}
	host, err := c.pod.netns.isHost()
	if err != nil {
		// Unknown is treated as the host's: the stricter rules.
		entry.WithError(err).Warn("cannot tell whether the container's network namespace is the host's; publishing as if it were")
		host = true
	}
	pub := newPublisher(c, entry, ingressRulesFor(c.spec, host, limits), limits)
	defer pub.closeAll()
	// The guest decides how often its list changes: act on it at most
	// guest_events_per_second times a second. What changed meanwhile is
	// picked up by the next call, which returns the guest's latest list.
	events := rate.NewLimiter(rate.Limit(limits.GuestEventsPerSecond), limits.GuestEventsPerSecond)
	pub.follow(ctx, events, func(ctx context.Context, generation uint64) (*api.Listeners, error) {
		return c.pod.sb.agent.WaitListeners(ctx, &api.WaitListenersRequest{Generation: generation})
	})
}

// follow publishes each list wait returns, at most at the rate events
// allows, until ctx ends.
func (p *publisher) follow(ctx context.Context, events *rate.Limiter, wait func(context.Context, uint64) (*api.Listeners, error)) {
	var generation uint64
	for ctx.Err() == nil {
		if err := events.Wait(ctx); err != nil {
			return
		}
		callCtx, callCancel := context.WithTimeout(ctx, listenersPoll)
		resp, err := wait(callCtx, generation)
		callCancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if callCtx.Err() == nil {
				// Not the poll's deadline: the agent failed; retry later.
				p.entry.WithError(agentError(err)).Debug("wait for guest listeners")
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
			continue
		}
		generation = resp.Generation
		p.reconcile(ctx, resp.TcpPorts, resp.UdpPorts)
	}
}

// isHost reports whether the namespace is the host's: the shim's own (no
// namespace in the spec) or one that is the same as the shim's or init's.
func (n *netNS) isHost() (bool, error) {
	if n.f == nil {
		return true, nil
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(n.f.Fd()), &st); err != nil {
		return false, fmt.Errorf("stat %s: %w", n.f.Name(), err)
	}
	for _, host := range []string{"/proc/self/ns/net", "/proc/1/ns/net"} {
		fi, err := os.Stat(host)
		if err != nil {
			continue
		}
		if hs, ok := fi.Sys().(*syscall.Stat_t); ok && hs.Dev == st.Dev && hs.Ino == st.Ino {
			return true, nil
		}
	}
	return false, nil
}

// ingressRules is what the shim publishes of the guest's report.
type ingressRules struct {
	// limit bounds the ports published at once, TCP and UDP together.
	limit int
	// minPort is the lowest port published.
	minPort uint16
}

// ingressRulesFor decides the lowest port the shim publishes. The shim
// has no word from the container manager on which ports it wants: Docker's
// -p lives in docker-proxy and iptables, a CNI portmap in its own rules,
// none of it in the OCI spec. What the spec does say is which ports the
// container could bind itself under runc:
//
//   - In a namespace of the container's own, a port below 1024 is published
//     only if the spec lets the container bind it: CAP_NET_BIND_SERVICE in
//     its bounding set (Docker's and containerd's defaults) or
//     net.ipv4.ip_unprivileged_port_start at or below it (Docker sets 0).
//     That namespace is the container's; what it binds there is reachable
//     on the container's address only.
//   - In the host's namespace (host networking), a port below 1024 is never
//     published, whatever the spec: it would be bound by the root shim on
//     every address of the host, on the word of a guest that may be
//     anyone's code, and other software trusts those ports to be root's
//     (an sshd that restarts must not find port 22 taken). Higher ports
//     are published as a runc container's would be, and only if free: a
//     port the host already uses fails to bind and stays unpublished.
func ingressRulesFor(spec *specs.Spec, hostNetwork bool, limits config.Limits) ingressRules {
	r := ingressRules{limit: limits.PublishedPorts, minPort: privilegedPorts}
	if hostNetwork || spec == nil {
		return r
	}
	if spec.Process != nil && spec.Process.Capabilities != nil && slices.Contains(spec.Process.Capabilities.Bounding, "CAP_NET_BIND_SERVICE") {
		r.minPort = 1
		return r
	}
	if spec.Linux != nil {
		if v, ok := spec.Linux.Sysctl["net.ipv4.ip_unprivileged_port_start"]; ok {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 && n < privilegedPorts {
				r.minPort = uint16(max(n, 1))
			}
		}
	}
	return r
}

// ingressPort is one published port.
type ingressPort struct {
	udp  bool
	port uint16
}

func (k ingressPort) String() string {
	if k.udp {
		return fmt.Sprintf("UDP %d", k.port)
	}
	return fmt.Sprintf("TCP %d", k.port)
}

// ingressRefusals counts the distinct ports of one report left out, by why.
type ingressRefusals struct {
	invalid    int // 0 or above 65535
	privileged int // below the rules' minPort
	overLimit  int // past limits.published_ports
}

func (r ingressRefusals) any() bool { return r.invalid+r.privileged+r.overLimit > 0 }

// ingressPlan is what one reconcile changes: ports to close, ports to
// open (in this order), and what was refused.
type ingressPlan struct {
	close, open []ingressPort
	refused     ingressRefusals
}

// portBits is a set of the 65,536 ports: the report's size decides how long
// planning takes, never how much it allocates.
type portBits [1 << 16 / 64]uint64

func (b *portBits) set(p uint16)      { b[p/64] |= 1 << (p % 64) }
func (b *portBits) has(p uint16) bool { return b[p/64]&(1<<(p%64)) != 0 }

// planIngress works out how published ports (have) follow the guest's
// report (tcp, udp) within the rules. Ports already published stay while
// the guest still reports them; new ones are added in ascending order, TCP
// first, until the limit; the rest are refused, and so are invalid ports
// and ports below the rules' minimum. A report may hold any number of
// entries, duplicates and values that are not ports.
func planIngress(have map[ingressPort]io.Closer, tcp, udp []uint32, r ingressRules) ingressPlan {
	var plan ingressPlan
	var want, refused [2]portBits
	for i, ports := range [2][]uint32{tcp, udp} {
		for _, p := range ports {
			if p == 0 || p > 65535 {
				plan.refused.invalid++ // not de-duplicated: there is no port to key them by
				continue
			}
			port := uint16(p)
			if want[i].has(port) || refused[i].has(port) {
				continue
			}
			if port < r.minPort {
				refused[i].set(port)
				plan.refused.privileged++
				continue
			}
			want[i].set(port)
		}
	}
	idx := func(k ingressPort) int {
		if k.udp {
			return 1
		}
		return 0
	}
	kept := 0
	for k := range have {
		if want[idx(k)].has(k.port) {
			kept++
		} else {
			plan.close = append(plan.close, k)
		}
	}
	// Never more than the limit, even if it were lowered under published
	// ports: the highest go.
	if kept > r.limit {
		var keep []ingressPort
		for k := range have {
			if want[idx(k)].has(k.port) {
				keep = append(keep, k)
			}
		}
		sortPorts(keep)
		plan.close = append(plan.close, keep[r.limit:]...)
		plan.refused.overLimit += kept - r.limit
		kept = r.limit
	}
	sortPorts(plan.close)
	for i := range want {
		for w, word := range want[i] {
			for word != 0 {
				bit := uint16(bits.TrailingZeros64(word))
				word &^= 1 << bit
				k := ingressPort{udp: i == 1, port: uint16(w)*64 + bit}
				if _, ok := have[k]; ok {
					continue
				}
				if kept >= r.limit {
					plan.refused.overLimit++
					continue
				}
				plan.open = append(plan.open, k)
				kept++
			}
		}
	}
	return plan
}

// sortPorts orders ports TCP first, then by number.
func sortPorts(ports []ingressPort) {
	slices.SortFunc(ports, func(a, b ingressPort) int {
		if a.udp != b.udp {
			if a.udp {
				return 1
			}
			return -1
		}
		return int(a.port) - int(b.port)
	})
}

// publisher holds the namespace-side sockets of one container.
type publisher struct {
	c     *Container
	entry *log.Entry
	rules ingressRules
	// open opens the namespace-side socket of a port (listen and serve
	// TCP, relay UDP); a field so tests can stand in for the namespace.
	open func(context.Context, ingressPort) (io.Closer, error)
	// dialGuest connects to a TCP port of the guest (the userspace
	// network's); a field for the same reason.
	dialGuest    func(context.Context, uint16) (net.Conn, error)
	dialGuestUDP func(uint16) (net.Conn, error)

	mu        sync.Mutex
	published map[ingressPort]io.Closer
	// lastLog and suppressed space the summaries of refused ports.
	lastLog    time.Time
	suppressed int

	// tcpConns and udpFlows count the ingress connections and UDP flows
	// being relayed, bounded by maxTCPConns and maxUDPFlows: each holds
	// an endpoint in the userspace network and goroutines in the shim.
	tcpConns, udpFlows       atomic.Int64
	maxTCPConns, maxUDPFlows int64
}

func newPublisher(c *Container, entry *log.Entry, rules ingressRules, limits config.Limits) *publisher {
	p := &publisher{
		c: c, entry: entry, rules: rules,
		published:   map[ingressPort]io.Closer{},
		maxTCPConns: int64(limits.TCPFlows),
		maxUDPFlows: int64(limits.UDPFlows),
	}
	p.open = p.openPort
	if c != nil && c.pod.net != nil {
		p.dialGuest, p.dialGuestUDP = c.pod.net.policy.DialGuest, c.pod.net.policy.DialGuestUDP
	}
	return p
}

// openPort opens the namespace-side socket of k.
func (p *publisher) openPort(ctx context.Context, k ingressPort) (io.Closer, error) {
	if k.udp {
		return p.relayUDP(ctx, k.port)
	}
	ln, err := p.listen(k.port)
	if err != nil {
		return nil, err
	}
	go p.serve(ctx, ln, k.port)
	return ln, nil
}

// reconcile publishes the ports of the guest's report that the rules
// allow and stops publishing the others.
func (p *publisher) reconcile(ctx context.Context, tcp, udp []uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	plan := planIngress(p.published, tcp, udp, p.rules)
	for _, k := range plan.close {
		if err := p.published[k].Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			p.entry.WithError(err).Debugf("close the socket of %s", k)
		}
		delete(p.published, k)
	}
	var failed int
	var firstErr error
	for _, k := range plan.open {
		c, err := p.open(ctx, k)
		if err != nil {
			// Typically a port the namespace already uses; tried again
			// when the guest's list next changes.
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", k, err)
			}
			failed++
			continue
		}
		p.published[k] = c
	}
	p.summarise(plan.refused, failed, firstErr)
}

// summarise logs what one reconcile refused or could not bind, in one
// line, at most once per refusalLogInterval.
func (p *publisher) summarise(r ingressRefusals, failed int, firstErr error) {
	if !r.any() && failed == 0 {
		return
	}
	now := time.Now()
	if !p.lastLog.IsZero() && now.Sub(p.lastLog) < refusalLogInterval {
		p.suppressed++
		return
	}
	e := p.entry.WithField("published", len(p.published)).
		WithField("over_limit", r.overLimit).
		WithField("below_min_port", r.privileged).
		WithField("invalid", r.invalid).
		WithField("bind_failed", failed).
		WithField("earlier_reports_suppressed", p.suppressed)
	if firstErr != nil {
		e = e.WithError(firstErr)
	}
	e.Warnf("guest listeners not published (at most %d ports, TCP and UDP together, none below %d)", p.rules.limit, p.rules.minPort)
	p.lastLog, p.suppressed = now, 0
}

// listen listens on port on every address of the container's namespace.
func (p *publisher) listen(port uint16) (net.Listener, error) {
	var ln net.Listener
	err := p.c.pod.netns.do(func() error {
		var err error
		ln, err = net.Listen("tcp", wildcard(port))
		return err
	})
	return ln, err
}

// wildcard is port on every address.
func wildcard(port uint16) string {
	return net.JoinHostPort("", strconv.Itoa(int(port)))
}

func (p *publisher) serve(ctx context.Context, ln net.Listener, port uint16) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		if p.tcpConns.Add(1) > p.maxTCPConns {
			p.tcpConns.Add(-1)
			conn.Close()
			p.entry.Debugf("ingress connection to port %d refused: %d connections already (limits.tcp_flows)", port, p.maxTCPConns)
			continue
		}
		go func() {
			defer p.tcpConns.Add(-1)
			p.forward(ctx, conn, port)
		}()
	}
}

// forward joins a namespace-side connection to a new one into the guest.
func (p *publisher) forward(ctx context.Context, outside net.Conn, port uint16) {
	defer outside.Close()
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	inside, err := p.dialGuest(dialCtx, port)
	cancel()
	if err != nil {
		p.entry.WithError(err).Debug("ingress connection refused by the guest")
		return
	}
	defer inside.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Pass the end of one direction on as a half-close, so
		// request/response protocols that close their side still work.
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(inside, outside)
	go pipe(outside, inside)
	select {
	case <-done:
		<-done
	case <-ctx.Done():
	}
}

func (p *publisher) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, c := range p.published {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			p.entry.WithError(err).Debugf("close the socket of %s", k)
		}
		delete(p.published, k)
	}
}
