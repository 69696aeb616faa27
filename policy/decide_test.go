package policy

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// The decisions as tables: a Policy from annotations, Facts from maps, and
// no network stack.

// tableFacts is StaticFacts with a resolver that counts its lookups.
type tableFacts struct {
	StaticFacts
	res *testResolver
}

func (f tableFacts) lookups() int {
	f.res.mu.Lock()
	defer f.res.mu.Unlock()
	n := 0
	for _, c := range f.res.lookups {
		n += c
	}
	return n
}

var (
	synthAPI   = netip.MustParseAddr("198.19.0.1")
	synthDB    = netip.MustParseAddr("198.19.0.2")
	synthMeta  = netip.MustParseAddr("198.19.0.3")
	synthOther = netip.MustParseAddr("198.19.0.4")
	synthNever = netip.MustParseAddr("198.19.0.99")
	metaIP     = netip.MustParseAddr("169.254.169.254")
	privIP     = netip.MustParseAddr("10.0.0.7")
	hostIP     = netip.MustParseAddr("93.184.215.99")
	gatewayIP  = netip.MustParseAddr("192.168.127.1")
)

func newTableFacts() tableFacts {
	res := &testResolver{table: map[string][]netip.Addr{
		"api.example.com":   {apiIP},
		"db.example.com":    {dbIP},
		"metadata.internal": {privIP},
		"other.example.com": {otherIP},
		"mixed.example.com": {apiIP, privIP},
	}}
	return tableFacts{StaticFacts{
		Synthetic: map[netip.Addr]string{synthAPI: "api.example.com", synthDB: "db.example.com", synthMeta: "metadata.internal", synthOther: "other.example.com"},
		Forwarded: map[netip.Addr][]string{
			apiIP:  {"api.example.com"},
			dbIP:   {"db.example.com"},
			privIP: {"metadata.internal"},
		},
		Resolver: res,
	}, res}
}

// tablePolicy builds the Policy of annotations ann (with the secret TOKEN
// valued "real-value-123" when ann names one), the host's own address
// being hostIP.
func tablePolicy(t *testing.T, ann map[string]string) *Policy {
	t.Helper()
	cfg := settings(t, ann).Config(map[string]string{"TOKEN": "real-value-123"})
	cfg.HostAddrs = func(context.Context) ([]netip.Addr, error) { return []netip.Addr{hostIP}, nil }
	p, err := NewPolicy(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	annAllow    = KeyAllow
	annTCP      = KeyTCPAllow
	annInternal = KeyAllowInternal
	annMode     = KeyMode
	annDNS      = KeyDNS
)

func TestNewPolicy(t *testing.T) {
	if _, err := NewPolicy(context.Background(), Config{Mode: NetModeNone}); !errors.Is(err, ErrNoNetwork) {
		t.Errorf("net.mode=none: %v, want ErrNoNetwork", err)
	}
	if _, err := NewPolicy(context.Background(), Config{Mode: "bogus"}); err == nil {
		t.Error("an unknown net.mode was accepted")
	}
	if _, err := NewPolicy(context.Background(), Config{TCPAllow: allow(t, "db.example.com")}); err == nil {
		t.Error("a net.tcp-allow entry without a port was accepted")
	}
	if _, err := NewPolicy(context.Background(), Config{Secrets: map[string]Secret{"T": {Hosts: allow(t, "a.example.com")}}}); err == nil {
		t.Error("a secret without a value was accepted")
	}
	p := tablePolicy(t, map[string]string{KeySecretPrefix + "TOKEN": "api.example.com"})
	if ph, ok := p.Placeholder("TOKEN"); !ok || !strings.HasPrefix(ph, PlaceholderPrefix) {
		t.Errorf("placeholder %q, %v", ph, ok)
	}
}

func TestDecideConnect(t *testing.T) {
	ap := netip.AddrPortFrom
	base := map[string]string{annAllow: "api.example.com,*.svc.example.com:8443", annTCP: "db.example.com:5432,93.184.215.21:2222"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name   string
		ann    map[string]string
		dst    netip.AddrPort
		action TCPAction
		host   string // the raw host for TCPRaw
		reason string // contained in the audit reason
	}{
		{"gateway DNS", base, ap(gatewayIP, 53), TCPDNS, "", ""},
		{"gateway other port: the host, not allowed", base, ap(gatewayIP, 80), TCPRefuse, "", "port 80 of " + HostName + " is not in"},
		{"DNS to any address", base, ap(privIP, 53), TCPDNS, "", ""},
		{"synthetic never handed out", base, ap(synthNever, 443), TCPRefuse, "", "not handed out by synthetic DNS"},
		{"synthetic allowed web port", base, ap(synthAPI, 443), TCPInspect, "", ""},
		{"synthetic allowed port 80", base, ap(synthAPI, 80), TCPInspect, "", ""},
		{"synthetic port not allowed", base, ap(synthAPI, 22), TCPRefuse, "",
			"port 22 of api.example.com is not in " + annAllow + "; allow it with " + annAllow + "=api.example.com:22 (HTTP/TLS) or " + annTCP + "=api.example.com:22 (raw TCP)"},
		{"synthetic name not allowed", base, ap(synthOther, 443), TCPRefuse, "", "port 443 of other.example.com is not in"},
		{"synthetic tcp-allow", base, ap(synthDB, 5432), TCPRaw, "db.example.com", annTCP},
		{"synthetic tcp-allow other port", base, ap(synthDB, 5433), TCPRefuse, "", "port 5433 of db.example.com"},
		{"public address, port covered", base, ap(otherIP, 443), TCPInspect, "", ""},
		{"public address, entry port covered", base, ap(otherIP, 8443), TCPInspect, "", ""},
		{"public address, port not covered", base, ap(otherIP, 8080), TCPRefuse, "", "no " + annAllow + " entry covers port 8080"},
		{"tcp-allow IP literal", base, ap(bannerIP, 2222), TCPRaw, "93.184.215.21", annTCP},
		{"tcp-allow name, synthetic DNS: address not trusted", base, ap(dbIP, 5432), TCPRefuse, "", "covers port 5432"},
		{"tcp-allow name, forwarded DNS answer", with(annDNS, "trusted"), ap(dbIP, 5432), TCPRaw, "db.example.com", annTCP},
		{"tcp-allow name, address never answered", with(annDNS, "trusted"), ap(otherIP, 5432), TCPRefuse, "", ""},
		{"internal", base, ap(privIP, 443), TCPRefuse, "", "internal address; to reach it, name it in " + annInternal},
		{"metadata", base, ap(metaIP, 80), TCPRefuse, "", "internal address"},
		{"IPv4-mapped internal", base, ap(netip.MustParseAddr("::ffff:10.0.0.7"), 443), TCPRefuse, "", "internal address"},
		{"NAT64 internal", base, ap(netip.MustParseAddr("64:ff9b::a9fe:a9fe"), 80), TCPRefuse, "", "internal address"},
		{"the host's own address", base, ap(hostIP, 443), TCPRefuse, "", "internal address"},
		{"internal named by IP", with(annInternal, "10.0.0.7"), ap(privIP, 443), TCPInspect, "", ""},
		{"internal named by CIDR", with(annInternal, "10.0.0.0/8"), ap(privIP, 443), TCPInspect, "", ""},
		{"internal named by IP:port, other port", with(annInternal, "10.0.0.7:80"), ap(privIP, 443), TCPRefuse, "", "internal address"},
		{"internal named by name, synthetic DNS", with(annInternal, "metadata.internal"), ap(privIP, 443), TCPRefuse, "", "internal address"},
		{"internal named by name, forwarded DNS", with(annInternal, "metadata.internal", annDNS, "open"), ap(privIP, 443), TCPInspect, "", ""},
		{"open: any public port", with(annMode, "open"), ap(otherIP, 22), TCPInspect, "", ""},
		{"open: internal refused", with(annMode, "open"), ap(privIP, 22), TCPRefuse, "", "internal address"},
		{"open: host address refused", with(annMode, "open"), ap(hostIP, 22), TCPRefuse, "", "internal address"},
		{"open: tcp-allow still raw", with(annMode, "open"), ap(synthDB, 5432), TCPRaw, "db.example.com", annTCP},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			facts := newTableFacts()
			d := tablePolicy(t, tc.ann).DecideConnect(facts, tc.dst, gatewayIP)
			if d.Action != tc.action {
				t.Fatalf("action %d (%q), want %d", d.Action, d.auditReason(), tc.action)
			}
			if d.Allow != (tc.action != TCPRefuse) {
				t.Errorf("Allow = %v for action %d", d.Allow, d.Action)
			}
			if d.Host != tc.host {
				t.Errorf("host %q, want %q", d.Host, tc.host)
			}
			if !strings.Contains(d.auditReason(), tc.reason) {
				t.Errorf("reason %q, want it to contain %q", d.auditReason(), tc.reason)
			}
			named := synthPrefix.Contains(tc.dst.Addr()) || tc.dst.Addr() == gatewayIP && tc.dst.Port() != 53
			if d.Flow.Dst != tc.dst || d.Flow.Synthetic != named {
				t.Errorf("flow %+v", d.Flow)
			}
			if n := facts.lookups(); n != 0 {
				t.Errorf("a connect decision made %d lookups", n)
			}
		})
	}
}

// host.gondolin.internal: the gateway address and the name stand for the
// host's loopback (of the namespace the traffic leaves from), reached only
// when net.allow-internal names it and, in mode policy, net.allow or
// net.tcp-allow does too.
func TestHostName(t *testing.T) {
	ctx := context.Background()
	ap := netip.AddrPortFrom
	req := func(host string) *http.Request {
		r, _ := http.NewRequest("GET", "http://"+host+"/", nil)
		return r
	}
	for _, tc := range []struct {
		name      string
		ann       map[string]string
		dst       netip.AddrPort
		host      string // the request's Host; "" for a raw flow
		connect   TCPAction
		allow     bool // the request (or raw dial) goes to 127.0.0.1
		dnsAnswer bool
		reason    string
	}{
		{"allowed, HTTP", map[string]string{annAllow: HostName + ":8080", annInternal: "127.0.0.1"}, ap(gatewayIP, 8080), HostName + ":8080", TCPInspect, true, true, ""},
		{"allow-internal by name", map[string]string{annAllow: HostName + ":8080", annInternal: HostName}, ap(gatewayIP, 8080), HostName + ":8080", TCPInspect, true, true, ""},
		{"no allow-internal", map[string]string{annAllow: HostName + ":8080"}, ap(gatewayIP, 8080), HostName + ":8080", TCPInspect, false, true, "resolves to internal address 127.0.0.1"},
		{"allow-internal other port", map[string]string{annAllow: HostName + ":8080", annInternal: "127.0.0.1:9090"}, ap(gatewayIP, 8080), HostName + ":8080", TCPInspect, false, true, "internal address"},
		{"not in net.allow", map[string]string{annInternal: "127.0.0.1"}, ap(gatewayIP, 8080), "", TCPRefuse, false, false, "is not in " + annAllow},
		{"raw TCP", map[string]string{annTCP: HostName + ":5432", annInternal: "127.0.0.0/8"}, ap(gatewayIP, 5432), "", TCPRaw, true, true, ""},
		{"open mode still needs allow-internal", map[string]string{annMode: "open"}, ap(gatewayIP, 5432), "", TCPInspect, false, true, "internal address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tablePolicy(t, tc.ann)
			facts := newTableFacts()
			if dd := p.DecideDNS(HostName + "."); (dd.Action == DNSHost) != tc.dnsAnswer {
				t.Errorf("DNS: %+v", dd)
			}
			c := p.DecideConnect(facts, tc.dst, gatewayIP)
			if c.Action != tc.connect {
				t.Fatalf("connect: %+v", c)
			}
			if c.Action == TCPRefuse {
				if !strings.Contains(c.auditReason(), tc.reason) {
					t.Errorf("reason %q, want %q", c.auditReason(), tc.reason)
				}
				return
			}
			var addrs []netip.Addr
			var reason string
			if tc.host != "" {
				d := p.DecideRequest(ctx, facts, c.Flow, req(tc.host))
				addrs, reason = d.Addrs, d.auditReason()
				if d.Allow != tc.allow {
					t.Fatalf("request: %+v", d)
				}
			} else {
				var err error
				addrs, err = p.ConnectAddrs(ctx, facts, c.Flow, HostName)
				if err != nil {
					reason = err.Error()
				}
				if (err == nil) != tc.allow {
					t.Fatalf("raw dial: %v %v", addrs, err)
				}
			}
			if tc.allow && (len(addrs) != 1 || addrs[0] != netip.MustParseAddr("127.0.0.1")) {
				t.Errorf("dialled %v, want 127.0.0.1", addrs)
			}
			if !strings.Contains(reason, tc.reason) {
				t.Errorf("reason %q, want %q", reason, tc.reason)
			}
			if facts.lookups() != 0 {
				t.Error("the host's name was looked up")
			}
		})
	}
	// Not answered to a guest whose policy names nothing of it.
	if d := tablePolicy(t, map[string]string{annAllow: "api.example.com"}).DecideDNS(HostName); d.Action != DNSRefuse {
		t.Errorf("DNS without a rule: %+v", d)
	}
}

func TestConnectAddrs(t *testing.T) {
	p := tablePolicy(t, map[string]string{annTCP: "db.example.com:5432,mixed.example.com:5432", annInternal: "10.0.0.9"})
	cases := []struct {
		name  string
		fl    Flow
		host  string
		addrs []netip.Addr
		err   string
	}{
		{"synthetic: resolved", Flow{Dst: netip.AddrPortFrom(synthDB, 5432), Synthetic: true, Name: "db.example.com"}, "db.example.com", []netip.Addr{dbIP}, ""},
		{"synthetic: one internal address refuses all", Flow{Dst: netip.AddrPortFrom(synthOther, 5432), Synthetic: true, Name: "mixed.example.com"}, "mixed.example.com", nil, "mixed.example.com resolves to internal address 10.0.0.7"},
		{"synthetic: unresolvable", Flow{Dst: netip.AddrPortFrom(synthOther, 5432), Synthetic: true, Name: "gone.example.com"}, "gone.example.com", nil, "cannot resolve gone.example.com"},
		{"address: as the guest chose", Flow{Dst: netip.AddrPortFrom(dbIP, 5432)}, "db.example.com", []netip.Addr{dbIP}, ""},
		{"address: internal", Flow{Dst: netip.AddrPortFrom(privIP, 5432)}, "db.example.com", nil, "internal address 10.0.0.7"},
		{"address: internal named", Flow{Dst: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.9"), 5432)}, "db.example.com", []netip.Addr{netip.MustParseAddr("10.0.0.9")}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addrs, err := p.ConnectAddrs(context.Background(), newTableFacts(), tc.fl, tc.host)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(addrs, tc.addrs) {
				t.Fatalf("%v, %v; want %v", addrs, err, tc.addrs)
			}
		})
	}
}

func TestDecideSniffed(t *testing.T) {
	policy := tablePolicy(t, map[string]string{annAllow: "api.example.com"})
	open := tablePolicy(t, map[string]string{annMode: "open"})
	openSecrets := tablePolicy(t, map[string]string{annMode: "open", KeySecretPrefix + "TOKEN": "api.example.com"})
	fl := Flow{Dst: netip.AddrPortFrom(otherIP, 8080)}
	cases := []struct {
		name     string
		p        *Policy
		kind     protoKind
		timedOut bool
		act      sniffAction
		reason   string
	}{
		{"policy: TLS intercepted", policy, protoTLS, false, sniffTLS, ""},
		{"policy: HTTP served", policy, protoHTTP, false, sniffHTTP, ""},
		{"policy: other refused", policy, protoUnknown, false, sniffRefuse, "not HTTP or TLS; raw TCP needs " + annTCP + "=93.184.215.11:8080"},
		{"policy: silence refused", policy, protoUnknown, true, sniffRefuse, "no data from the client"},
		{"open: TLS raw", open, protoTLS, false, sniffRaw, "net.mode=open"},
		{"open: HTTP served", open, protoHTTP, false, sniffHTTP, ""},
		{"open: other raw", open, protoUnknown, false, sniffRaw, "net.mode=open"},
		{"open: silence raw", open, protoUnknown, true, sniffRaw, "net.mode=open"},
		{"open with secrets: TLS intercepted", openSecrets, protoTLS, false, sniffTLS, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			act, v := tc.p.decideSniffed(fl, tc.kind, tc.timedOut)
			if act != tc.act || v.Allow != (act != sniffRefuse) || !strings.Contains(v.auditReason(), tc.reason) {
				t.Fatalf("%d %+v, want %d %q", act, v, tc.act, tc.reason)
			}
		})
	}
	if got := policy.sniffTimeout(8080); got != sniffTimeout {
		t.Errorf("policy sniff timeout %s", got)
	}
	if open.sniffTimeout(443) != sniffTimeout || open.sniffTimeout(8080) != openSniffTimeout {
		t.Error("open mode waits briefly only off ports 80 and 443")
	}
}

func TestDecideRequest(t *testing.T) {
	ap := netip.AddrPortFrom
	secret := KeySecretPrefix + "TOKEN"
	placeholder := "\x00" // replaced by the policy's placeholder
	cases := []struct {
		name    string
		ann     map[string]string
		fl      Flow
		method  string
		target  string // absolute URL, or a path with host as Host
		host    string
		hdr     []string
		status  int // 0: allowed
		reason  string
		addrs   []netip.Addr
		secrets []string
	}{
		{"allowed, synthetic", map[string]string{annAllow: "api.example.com"}, Flow{Dst: ap(synthAPI, 443), Synthetic: true, Name: "api.example.com", TLS: true},
			"GET", "/v1", "api.example.com", nil, 0, "host in " + annAllow, []netip.Addr{apiIP}, nil},
		{"Host decides, not the synthetic name", map[string]string{annAllow: "api.example.com"}, Flow{Dst: ap(synthAPI, 443), Synthetic: true, Name: "api.example.com", TLS: true},
			"GET", "/", "other.example.com", nil, http.StatusForbidden, "other.example.com:443 is not in " + annAllow, nil, nil},
		{"missing Host: the SNI stands in", map[string]string{annAllow: "api.example.com"}, Flow{Dst: ap(otherIP, 443), TLS: true, SNI: "api.example.com"},
			"GET", "/", "", nil, 0, "", []netip.Addr{apiIP}, nil},
		{"port from the Host", map[string]string{annAllow: "api.example.com:8443"}, Flow{Dst: ap(synthAPI, 443), Synthetic: true, Name: "api.example.com", TLS: true},
			"GET", "/", "api.example.com:8443", nil, 0, "", []netip.Addr{apiIP}, nil},
		{"invalid Host", map[string]string{annAllow: "api.example.com"}, Flow{Dst: ap(apiIP, 80)},
			"GET", "/", "evil.com@api.example.com", nil, http.StatusBadRequest, "invalid Host", nil, nil},
		{"port 0", map[string]string{annAllow: "api.example.com"}, Flow{Dst: ap(apiIP, 80)},
			"GET", "/", "api.example.com:0", nil, http.StatusBadRequest, "invalid Host", nil, nil},
		{"CONNECT", map[string]string{annMode: "open"}, Flow{Dst: ap(apiIP, 80)},
			"CONNECT", "/", "api.example.com:443", nil, http.StatusForbidden, "CONNECT tunnels are not allowed", nil, nil},
		{"synthetic DNS: the guest's address is not trusted", map[string]string{annAllow: "api.example.com"}, Flow{Dst: ap(otherIP, 80)},
			"GET", "/", "api.example.com", nil, 0, "", []netip.Addr{apiIP}, nil},
		{"forwarded DNS: an address of the host", map[string]string{annAllow: "api.example.com", annDNS: "trusted"}, Flow{Dst: ap(apiIP, 80)},
			"GET", "/", "api.example.com", nil, 0, "", []netip.Addr{apiIP}, nil},
		{"forwarded DNS: not an address of the host", map[string]string{annAllow: "api.example.com", annDNS: "trusted"}, Flow{Dst: ap(otherIP, 80)},
			"GET", "/", "api.example.com", nil, http.StatusForbidden, "the guest connected to 93.184.215.11, which is not an address of api.example.com", nil, nil},
		{"forwarded DNS: internal address", map[string]string{annAllow: "metadata.internal", annDNS: "open"}, Flow{Dst: ap(privIP, 80)},
			"GET", "/", "metadata.internal", nil, http.StatusForbidden, "metadata.internal resolves to internal address 10.0.0.7", nil, nil},
		{"one internal address refuses the host", map[string]string{annAllow: "mixed.example.com"}, Flow{Dst: ap(otherIP, 80)},
			"GET", "/", "mixed.example.com", nil, http.StatusForbidden, "resolves to internal address 10.0.0.7", nil, nil},
		{"internal named by allow-internal", map[string]string{annAllow: "metadata.internal", annInternal: "metadata.internal"}, Flow{Dst: ap(synthMeta, 80), Synthetic: true, Name: "metadata.internal"},
			"GET", "/", "metadata.internal", nil, 0, "", []netip.Addr{privIP}, nil},
		{"unresolvable", map[string]string{annAllow: "gone.example.com"}, Flow{Dst: ap(otherIP, 80)},
			"GET", "/", "gone.example.com", nil, http.StatusBadGateway, "cannot resolve gone.example.com", nil, nil},
		{"open: the guest's public address as it is", map[string]string{annMode: "open"}, Flow{Dst: ap(otherIP, 80)},
			"GET", "/", "anything.example.net", nil, 0, "net.mode=open", []netip.Addr{otherIP}, nil},
		{"open: internal refused", map[string]string{annMode: "open"}, Flow{Dst: ap(privIP, 80)},
			"GET", "/", "anything.example.net", nil, http.StatusForbidden, "resolves to internal address", nil, nil},
		{"secret to its host", map[string]string{annAllow: "api.example.com", secret: "api.example.com"}, Flow{Dst: ap(synthAPI, 443), Synthetic: true, Name: "api.example.com", TLS: true},
			"GET", "/", "api.example.com", []string{"Authorization", "Bearer " + placeholder}, 0, "", []netip.Addr{apiIP}, []string{"TOKEN"}},
		{"secret to another host", map[string]string{annAllow: "api.example.com,other.example.com", secret: "api.example.com"}, Flow{Dst: ap(otherIP, 443), TLS: true},
			"GET", "/", "other.example.com", []string{"Authorization", "Bearer " + placeholder}, http.StatusForbidden, "carries secret TOKEN, which may not be sent to https://other.example.com:443", nil, nil},
		{"secret over http", map[string]string{annAllow: "api.example.com", secret: "api.example.com"}, Flow{Dst: ap(apiIP, 80)},
			"GET", "/?k=" + placeholder, "api.example.com", nil, http.StatusForbidden, "may not be sent to http://api.example.com:80", nil, nil},
		{"secret value to another host", map[string]string{annMode: "open", secret: "api.example.com"}, Flow{Dst: ap(otherIP, 80)},
			"GET", "/", "other.example.com", []string{"X-Key", "real-value-123"}, http.StatusForbidden, "carries secret TOKEN", nil, nil},
		{"open with a secret: the host decides", map[string]string{annMode: "open", annDNS: "open", secret: "api.example.com"}, Flow{Dst: ap(otherIP, 443), TLS: true},
			"GET", "/", "api.example.com", []string{"Authorization", placeholder}, http.StatusForbidden, "not an address of api.example.com", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tablePolicy(t, tc.ann)
			ph, _ := p.Placeholder("TOKEN")
			r := testRequest(strings.ReplaceAll(tc.target, placeholder, ph))
			r.Method, r.Host = tc.method, tc.host
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				r.Header.Add(tc.hdr[i], strings.ReplaceAll(tc.hdr[i+1], placeholder, ph))
			}
			before := r.Header.Clone()
			d := p.DecideRequest(context.Background(), newTableFacts(), tc.fl, r)
			if d.Allow != (tc.status == 0) || d.Status != tc.status {
				t.Fatalf("allow %v status %d (%s), want status %d", d.Allow, d.Status, d.Reason, tc.status)
			}
			if !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("reason %q, want it to contain %q", d.Reason, tc.reason)
			}
			if !slices.Equal(d.Addrs, tc.addrs) || !slices.Equal(d.Secrets, tc.secrets) {
				t.Errorf("addrs %v secrets %v, want %v %v", d.Addrs, d.Secrets, tc.addrs, tc.secrets)
			}
			if strings.Contains(d.Reason+d.Hint, "real-value") {
				t.Error("a decision names a secret's value")
			}
			for k, v := range before {
				if !slices.Equal(r.Header[k], v) {
					t.Errorf("the decision changed header %s", k)
				}
			}
		})
	}
}

// A request that is refused before its addresses are looked at is never
// resolved: a guest cannot make the host look up names the policy refuses.
func TestDecideRequestResolvesOnlyAllowed(t *testing.T) {
	p := tablePolicy(t, map[string]string{annAllow: "api.example.com"})
	facts := newTableFacts()
	r := testRequest("/")
	r.Host = "exfil-data.attacker.example"
	if d := p.DecideRequest(context.Background(), facts, Flow{Dst: netip.AddrPortFrom(otherIP, 80)}, r); d.Allow {
		t.Fatal("allowed")
	}
	if n := facts.lookups(); n != 0 {
		t.Fatalf("%d lookups", n)
	}
}

func TestDecideDNS(t *testing.T) {
	allowList := map[string]string{annAllow: "api.example.com,*.example.org", annTCP: "db.example.com:5432"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{annAllow: allowList[annAllow], annTCP: allowList[annTCP]}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name   string
		ann    map[string]string
		qname  string
		action DNSAction
		norm   string
	}{
		{"synthetic: allowed", allowList, "API.Example.com.", DNSSynthesize, "api.example.com"},
		{"synthetic: wildcard", allowList, "x.example.org.", DNSSynthesize, "x.example.org"},
		{"synthetic: wildcard is not the domain", allowList, "example.org.", DNSRefuse, "example.org"},
		{"synthetic: tcp-allow host", allowList, "db.example.com.", DNSSynthesize, "db.example.com"},
		{"synthetic: not allowed", allowList, "other.example.com.", DNSRefuse, "other.example.com"},
		{"synthetic: invalid name", allowList, "a..b.", DNSRefuse, ""},
		{"localhost", allowList, "localhost.", DNSLocalhost, "localhost"},
		{"a localhost subdomain", allowList, "x.localhost.", DNSLocalhost, "x.localhost"},
		{"synthetic in open mode: anything", with(annMode, "open"), "other.example.com.", DNSSynthesize, "other.example.com"},
		{"trusted: allowed", with(annDNS, "trusted"), "api.example.com.", DNSForward, "api.example.com"},
		{"trusted: not allowed", with(annDNS, "trusted"), "other.example.com.", DNSRefuse, "other.example.com"},
		{"trusted: invalid", with(annDNS, "trusted"), "_x y.", DNSRefuse, ""},
		{"open: anything", with(annDNS, "open"), "other.example.com.", DNSForward, "other.example.com"},
		{"open: even invalid", with(annDNS, "open"), "a..b.", DNSForward, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := tablePolicy(t, tc.ann).DecideDNS(tc.qname)
			if d.Action != tc.action || d.Name != tc.norm || d.Valid != (tc.norm != "") {
				t.Fatalf("%+v, want action %d name %q", d, tc.action, tc.norm)
			}
			if d.Allow != (tc.action != DNSRefuse) {
				t.Errorf("Allow = %v", d.Allow)
			}
			if d.Action == DNSRefuse && d.Reason != "name not in "+annAllow {
				t.Errorf("reason %q", d.Reason)
			}
		})
	}
}

func TestDecideUDP(t *testing.T) {
	ap := netip.AddrPortFrom
	policy := map[string]string{annAllow: "api.example.com"}
	open := map[string]string{annMode: "open"}
	cases := []struct {
		name   string
		ann    map[string]string
		dst    netip.AddrPort
		action UDPAction
		host   string
		quiet  bool
		reason string
	}{
		{"DNS", policy, ap(gatewayIP, 53), UDPDNS, "", false, ""},
		{"DNS to any address", policy, ap(privIP, 53), UDPDNS, "", false, ""},
		{"policy: other UDP", policy, ap(otherIP, 443), UDPRefuse, "", false, "UDP other than DNS is not allowed in net.mode=policy"},
		{"open: public", open, ap(otherIP, 443), UDPRelay, "", false, "net.mode=open"},
		{"open: synthetic", open, ap(synthAPI, 443), UDPRelay, "api.example.com", false, "net.mode=open"},
		{"open: synthetic never handed out", open, ap(synthNever, 443), UDPRefuse, "", true, ""},
		{"open: internal", open, ap(privIP, 123), UDPRefuse, "", false, "internal address; to reach it, name it in " + annInternal},
		{"open: the host's address", open, ap(hostIP, 123), UDPRefuse, "", false, "internal address"},
		{"open: internal named", map[string]string{annMode: "open", annInternal: "10.0.0.0/8"}, ap(privIP, 123), UDPRelay, "", false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := tablePolicy(t, tc.ann).DecideUDP(newTableFacts(), tc.dst)
			if d.Action != tc.action || d.Name != tc.host || d.Quiet != tc.quiet || d.Allow != (tc.action != UDPRefuse) {
				t.Fatalf("%+v, want action %d name %q quiet %v", d, tc.action, tc.host, tc.quiet)
			}
			if !strings.Contains(d.auditReason(), tc.reason) {
				t.Errorf("reason %q, want it to contain %q", d.auditReason(), tc.reason)
			}
		})
	}
	p := tablePolicy(t, open)
	if addrs, err := p.UDPAddrs(context.Background(), newTableFacts(), ap(synthAPI, 443), "api.example.com"); err != nil || !slices.Equal(addrs, []netip.Addr{apiIP}) {
		t.Errorf("synthetic UDP addresses %v, %v", addrs, err)
	}
	if _, err := p.UDPAddrs(context.Background(), newTableFacts(), ap(synthOther, 443), "mixed.example.com"); err == nil || !strings.Contains(err.Error(), "internal address") {
		t.Errorf("a name with an internal address: %v", err)
	}
	if addrs, err := p.UDPAddrs(context.Background(), newTableFacts(), ap(otherIP, 443), ""); err != nil || !slices.Equal(addrs, []netip.Addr{otherIP}) {
		t.Errorf("UDP addresses %v, %v", addrs, err)
	}
}

// normalizeRequest drops what is never sent on: userinfo, and upgrades
// other than WebSocket over HTTP/1.
func TestNormalizeRequest(t *testing.T) {
	cases := []struct {
		proto   int
		upgrade string
		keep    bool
	}{
		{1, "websocket", true},
		{1, "WebSocket", true},
		{1, "h2c", false},
		{2, "websocket", false},
		{1, "", false},
	}
	for _, tc := range cases {
		r := testRequest("http://user:pw@api.example.com/", "Upgrade", tc.upgrade)
		r.ProtoMajor = tc.proto
		normalizeRequest(r)
		if r.URL.User != nil {
			t.Error("userinfo kept")
		}
		if got := r.Header.Get("Upgrade") != ""; got != tc.keep {
			t.Errorf("HTTP/%d Upgrade %q kept = %v", tc.proto, tc.upgrade, got)
		}
	}
}

// FuzzDecideConnect: whatever the destination, a flow the decision lets
// through to a non-synthetic address is to one that is not internal, or
// that net.allow-internal names (by address, or by a name forwarded DNS
// gave it); and the addresses a raw flow is dialled at pass the same check.
func FuzzDecideConnect(f *testing.F) {
	for _, s := range []string{"10.0.0.7", "93.184.215.11", "198.19.0.2", "::ffff:169.254.169.254", "64:ff9b::a00:7", "93.184.215.99", "192.168.127.1"} {
		f.Add(netip.MustParseAddr(s).AsSlice(), uint16(443), uint8(0))
	}
	anns := []map[string]string{
		{annAllow: "api.example.com,*.svc.example.com:8443", annTCP: "db.example.com:5432,93.184.215.21:2222"},
		{annMode: "open", annInternal: "10.0.0.0/8"},
		{annAllow: "metadata.internal", annInternal: "metadata.internal", annDNS: "open", annTCP: "db.example.com:5432"},
		{annMode: "open", annDNS: "trusted", annTCP: "metadata.internal:22"},
	}
	policies := make([]*Policy, len(anns))
	for i, ann := range anns {
		cfg := settings(f, ann).Config(nil)
		cfg.HostAddrs = func(context.Context) ([]netip.Addr, error) { return []netip.Addr{hostIP}, nil }
		p, err := NewPolicy(context.Background(), cfg)
		if err != nil {
			f.Fatal(err)
		}
		policies[i] = p
	}
	f.Fuzz(func(t *testing.T, addr []byte, port uint16, which uint8) {
		ip, ok := netip.AddrFromSlice(addr)
		if !ok {
			return
		}
		p := policies[int(which)%len(policies)]
		facts := newTableFacts()
		dst := netip.AddrPortFrom(ip, port)
		d := p.DecideConnect(facts, dst, gatewayIP)
		if d.Allow != (d.Action != TCPRefuse) {
			t.Fatalf("%s: Allow %v with action %d", dst, d.Allow, d.Action)
		}
		if d.Action == TCPRefuse || d.Action == TCPDNS || d.Flow.Synthetic {
			return
		}
		if ip.Unmap() == gatewayIP {
			t.Fatalf("%s: the gateway let through", dst)
		}
		if p.isInternal(ip) && !p.internalAllowed("", ip, port) && !p.recordedInternalAllowed(facts, ip, port) {
			t.Fatalf("%s: internal address let through (%d)", dst, d.Action)
		}
		if d.Action == TCPRaw {
			addrs, _ := p.ConnectAddrs(context.Background(), facts, d.Flow, d.Host)
			for _, a := range addrs {
				if p.addrBlocked(d.Host, a, port) {
					t.Fatalf("%s: raw flow dialled at blocked %s", dst, a)
				}
			}
		}
	})
}
