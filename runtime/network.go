package runtime

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/config"
	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/internal/netaddrs"
	"github.com/earendil-works/gondolin-containerd/oci"
	"github.com/earendil-works/gondolin-containerd/policy"
	"github.com/earendil-works/gondolin-containerd/vmm"
)

// sandboxNetwork is a VM's network: the policy stack its NIC's frames end
// in, the socket the VMM connects the NIC to and the audit file.
type sandboxNetwork struct {
	policy *policy.Network
	socket string
	ln     *net.UnixListener
	audit  *policy.AuditFile
	// logs are the shim-log writers of the audit and diagnostics.
	logs []io.Closer
}

// networkParams is what a sandbox's network is built from.
type networkParams struct {
	id        string
	namespace string
	stateDir  string
	// caDir holds the runtime's MITM CA, shared by its containers.
	caDir    string
	spec     *specs.Spec
	settings *oci.Settings
	runtime  *config.Config
	// ns is where allowed flows are dialled from.
	ns *netNS
}

// startNetwork builds the container's network and listens for the VMM's
// NIC. It returns nil for net.mode=none: the VM then has no NIC.
func startNetwork(ctx context.Context, p networkParams) (_ *sandboxNetwork, retErr error) {
	if p.settings.Mode == policy.NetModeNone {
		return nil, nil
	}
	sn := &sandboxNetwork{}
	defer func() {
		if retErr != nil {
			sn.Close()
		}
	}()
	ns := p.ns
	var err error

	values, err := secretValues(p.spec, p.settings, p.runtime)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
	}
	egress, err := p.runtime.Egress(p.settings.Rules, values)
	if err != nil {
		return nil, err
	}
	cfg := egress.Config
	cfg.Container = p.id
	cfg.CAStateDir = p.caDir
	cfg.Dialer = ns.dial
	cfg.HostAddrs = ns.hostAddrs
	cfg.Resolver = config.PinnedResolver{Pins: egress.Overrides, Next: config.DNSResolver(cfg.DNSServers, ns.dial)}
	if cfg.RootCAs, err = upstreamRoots(p.runtime.UpstreamCAFile); err != nil {
		return nil, err
	}

	entry := log.G(ctx).WithField("container", p.id)
	auditLog := entry.WithField("audit", "egress").WriterLevel(logrus.InfoLevel)
	diagLog := entry.WithField("component", "policy").WriterLevel(logrus.WarnLevel)
	sn.logs = append(sn.logs, auditLog, diagLog)
	if sn.audit, err = openAuditFile(p.runtime.AuditDir, p.namespace, p.id, p.runtime.Limits.AuditFileBytes); err != nil {
		return nil, err
	}
	cfg.AuditLog = io.MultiWriter(sn.audit, auditLog)
	cfg.Logger = slog.New(slog.NewTextHandler(diagLog, &slog.HandlerOptions{Level: slog.LevelWarn}))

	// The network outlives the create request: it ends with Close.
	pn, err := policy.NewNetwork(context.WithoutCancel(ctx), cfg)
	if err != nil {
		return nil, fmt.Errorf("egress policy: %w", err)
	}
	sn.policy = pn

	sn.socket = filepath.Join(p.stateDir, "net.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sn.socket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen for the VM's NIC: %w", err)
	}
	sn.ln = ln
	go sn.serve(entry)
	return sn, nil
}

// serve hands each connection of the VMM (one, unless it reconnects) to
// the policy stack.
func (sn *sandboxNetwork) serve(entry *log.Entry) {
	for {
		conn, err := sn.ln.Accept()
		if err != nil {
			return
		}
		if err := sn.policy.AttachStream(conn); err != nil {
			entry.WithError(err).Warn("attach the VM's NIC")
		}
	}
}

// nic is the VM's NIC for the VMM.
func (sn *sandboxNetwork) nic() *vmm.NIC {
	if sn == nil {
		return nil
	}
	gc := sn.policy.GuestConfig()
	return &vmm.NIC{Socket: sn.socket, MAC: gc.MAC, MTU: gc.MTU}
}

// guestConfig is what the agent configures on the NIC.
func (sn *sandboxNetwork) guestConfig() *api.ConfigureNetworkRequest {
	gc := sn.policy.GuestConfig()
	return &api.ConfigureNetworkRequest{
		Mac:     gc.MAC.String(),
		Address: gc.Address.String(),
		Gateway: gc.Gateway.String(),
		Mtu:     uint32(gc.MTU),
	}
}

// resolvConf is the guest's /etc/resolv.conf: the shim's DNS.
func (sn *sandboxNetwork) resolvConf() string {
	var b strings.Builder
	for _, a := range sn.policy.GuestConfig().DNS {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	return b.String()
}

// placeholders maps each secret's name to what the guest sees instead of
// its value: the policy's placeholders, or, without a network, fresh ones
// that nothing will ever substitute.
func (sn *sandboxNetwork) placeholders(settings *oci.Settings) map[string]string {
	if sn != nil {
		return sn.policy.Placeholders()
	}
	out := make(map[string]string, len(settings.Secrets))
	for name := range settings.Secrets {
		out[name] = policy.NewPlaceholder()
	}
	return out
}

// Close stops the network. Safe on nil.
func (sn *sandboxNetwork) Close() error {
	if sn == nil {
		return nil
	}
	var errs []error
	if sn.ln != nil {
		sn.ln.Close()
	}
	if sn.policy != nil {
		sn.policy.Close()
	}
	if sn.audit != nil {
		errs = append(errs, sn.audit.Close())
	}
	for _, c := range sn.logs {
		c.Close()
	}
	return errors.Join(errs...)
}

// secretValues reads the real value of each secret: from its host source
// when the runtime config names one ([secrets.NAME]: no container manager
// then holds it), else from the container's environment. Policy refuses a
// secret without a value.
func secretValues(spec *specs.Spec, settings *oci.Settings, rt *config.Config) (map[string]string, error) {
	values := map[string]string{}
	if spec.Process != nil {
		for _, kv := range spec.Process.Env {
			name, value, ok := strings.Cut(kv, "=")
			if _, secret := settings.Secrets[name]; ok && secret {
				values[name] = value
			}
		}
	}
	for name, hosts := range settings.Secrets {
		v, ok, err := rt.SecretValue(name, hosts)
		if err != nil {
			return nil, err
		}
		if ok {
			values[name] = v
		}
	}
	return values, nil
}

// openAuditFile opens <dir>/<namespace>/<id>.jsonl for appending; records
// of a container that ran before under the same name are kept. The file
// and its one predecessor <id>.jsonl.1 together stay under maxBytes
// (limits.audit_file_bytes): the oldest records make room.
func openAuditFile(dir, namespace, id string, maxBytes int64) (*policy.AuditFile, error) {
	nsDir := filepath.Join(dir, namespace)
	if err := os.MkdirAll(nsDir, 0o700); err != nil {
		return nil, fmt.Errorf("create audit directory: %w", err)
	}
	return policy.OpenAuditFile(filepath.Join(nsDir, id+".jsonl"), maxBytes)
}

// upstreamRoots is the system pool plus the operator's extra roots.
func upstreamRoots(extraFile string) (*x509.CertPool, error) {
	if extraFile == "" {
		return nil, nil // policy uses the system roots
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	pem, err := os.ReadFile(extraFile)
	if err != nil {
		return nil, fmt.Errorf("runtime config upstream_ca_file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("runtime config upstream_ca_file %s: no PEM certificate in it", extraFile)
	}
	return pool, nil
}

// hostAddrs lists the addresses a dial from the namespace could reach on
// the host itself: every address (IPv4 and IPv6, loopback included) and
// every route's gateway of the namespace, and the same of the shim's own
// namespace (the host's, whose outside address a container's route
// reaches). Policy counts each as internal.
func (n *netNS) hostAddrs(ctx context.Context) ([]netip.Addr, error) {
	own, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink in the shim's network namespace: %w", err)
	}
	defer own.Close()
	out, err := netaddrs.List(own)
	if err != nil {
		return nil, fmt.Errorf("the shim's network namespace: %w", err)
	}
	if n.f == nil {
		return out, nil
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(int(n.f.Fd())), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", n.f.Name(), err)
	}
	defer h.Close()
	more, err := netaddrs.List(h)
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", n.f.Name(), err)
	}
	return append(out, more...), nil
}
