package config

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/earendil-works/gondolin-containerd/policy"
)

// Limits bound what one container's guest — hostile by assumption — can
// make the host spend: memory in the shim, disk under /run and the log
// directories, listeners and flows. Each has a documented default
// (docs/configuration.md, [limits]); past a limit the shim refuses the
// extra work and writes one summarised audit or log line, never one per
// refusal. Zero values in a config file are refused: every limit stays on.
type Limits struct {
	// TCPFlows bounds the guest's concurrent TCP flows through the
	// egress policy (connections being classified, relayed or proxied).
	TCPFlows int `toml:"tcp_flows"`
	// UpstreamConnections bounds the host-side connections the egress
	// policy holds open for the guest at once (raw relays and HTTP
	// upstreams together): one guest connection can carry many HTTP/2
	// streams, each of which could otherwise need its own upstream.
	UpstreamConnections int `toml:"upstream_connections"`
	// UDPFlows bounds the guest's concurrent UDP flows (DNS included).
	UDPFlows int `toml:"udp_flows"`
	// DNSInFlight bounds DNS questions being answered at once, over UDP
	// and TCP alike.
	DNSInFlight int `toml:"dns_in_flight"`
	// HTTPHeaderBytes bounds one HTTP request's header block from the
	// guest; HTTPHeaderTimeout bounds how long the guest may take to send it.
	HTTPHeaderBytes   int      `toml:"http_header_bytes"`
	HTTPHeaderTimeout Duration `toml:"http_header_timeout"`
	// PublishedPorts bounds the guest listeners published on the host
	// side (TCP and UDP together).
	PublishedPorts int `toml:"published_ports"`
	// ConsoleLogBytes caps the VM's serial console log in the bundle.
	ConsoleLogBytes int64 `toml:"console_log_bytes"`
	// AuditFileBytes caps one container's audit file; AuditLinesPerSecond
	// caps the audit and shim-log lines one container's decisions write.
	AuditFileBytes      int64 `toml:"audit_file_bytes"`
	AuditLinesPerSecond int   `toml:"audit_lines_per_second"`
	// GuestEventsPerSecond caps events the guest can raise (OOM kills,
	// listener changes) that the shim acts on.
	GuestEventsPerSecond int `toml:"guest_events_per_second"`
	// FileServerOpenFiles caps the file descriptors each virtiofsd may
	// hold (one per inode the guest keeps looked up).
	FileServerOpenFiles int `toml:"file_server_open_files"`
	// AgentCallTimeout bounds every task-API call that waits on the guest;
	// past it the VM is treated as wedged and killed.
	AgentCallTimeout Duration `toml:"agent_call_timeout"`
	// HostMemoryOverheadMiB is what the VM's host processes (QEMU's own
	// heap and translation cache, the virtiofsds) may use beyond the VM's
	// memory: the container's host cgroup gets memory.max = VM memory
	// plus this.
	HostMemoryOverheadMiB int `toml:"host_memory_overhead_mib"`
}

// DefaultLimits suit a developer machine and a CI runner alike. Those the
// egress policy keeps are its own defaults (policy.DefaultLimits).
func DefaultLimits() Limits {
	p := policy.DefaultLimits()
	return Limits{
		TCPFlows:             p.TCPFlows,
		UDPFlows:             p.UDPFlows,
		UpstreamConnections:  p.UpstreamConnections,
		DNSInFlight:          p.DNSInFlight,
		HTTPHeaderBytes:      p.HTTPHeaderBytes,
		HTTPHeaderTimeout:    Duration{p.HTTPHeaderTimeout},
		PublishedPorts:       256,
		ConsoleLogBytes:      4 << 20,
		AuditFileBytes:       64 << 20,
		AuditLinesPerSecond:  p.AuditLinesPerSecond,
		GuestEventsPerSecond: 10,
		AgentCallTimeout:     Duration{30 * time.Second},
		FileServerOpenFiles:  1 << 20,
		// Measured under TCG: QEMU holds ~114 MiB besides guest RAM
		// (the 64 MiB translation cache, the kernel and initrd images,
		// its own binary and heap), each virtiofsd ~4 MiB; a busy VM's
		// cgroup peaked at 112 MiB over its guest RAM. See
		// docs/security.md.
		HostMemoryOverheadMiB: 160,
	}
}

// Policy returns the limits the egress policy keeps.
func (l Limits) Policy() policy.Limits {
	return policy.Limits{
		TCPFlows:            l.TCPFlows,
		UpstreamConnections: l.UpstreamConnections,
		UDPFlows:            l.UDPFlows,
		DNSInFlight:         l.DNSInFlight,
		HTTPHeaderBytes:     l.HTTPHeaderBytes,
		HTTPHeaderTimeout:   l.HTTPHeaderTimeout.Duration,
		AuditLinesPerSecond: l.AuditLinesPerSecond,
	}
}

// limitKeys names the keys of [limits], for error messages.
var limitKeys = func() string {
	t := reflect.TypeOf(Limits{})
	keys := make([]string, t.NumField())
	for i := range keys {
		keys[i] = t.Field(i).Tag.Get("toml")
	}
	return strings.Join(keys, ", ")
}()

func (l Limits) validate() []error {
	var errs []error
	v := reflect.ValueOf(l)
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		key := "limits." + t.Field(i).Tag.Get("toml")
		switch f := v.Field(i).Interface().(type) {
		case int:
			if f <= 0 {
				errs = append(errs, fmt.Errorf("%s = %d: must be at least 1 (limits cannot be turned off)", key, f))
			}
		case int64:
			if f <= 0 {
				errs = append(errs, fmt.Errorf("%s = %d: must be at least 1 (limits cannot be turned off)", key, f))
			}
		case Duration:
			if f.Duration <= 0 {
				errs = append(errs, fmt.Errorf("%s = %s: must be a positive duration such as \"30s\"", key, f.Duration))
			}
		}
	}
	return errs
}
