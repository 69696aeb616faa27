package runtime

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/log"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Docker changes a running container's namespace: docker network connect
// adds an interface, disconnect removes one and may move the default
// route. The shim follows the namespace's addresses and routes and gives
// the guest each new configuration, so what the container sees keeps
// matching what Docker reports.

// netSettle is how long a burst of netlink updates (one change is several
// messages: address, prefix route, default route) is let to settle before
// the namespace is read again.
const netSettle = 100 * time.Millisecond

// netWatch is a subscription to a namespace's address and route changes.
type netWatch struct {
	addrs  chan netlink.AddrUpdate
	routes chan netlink.RouteUpdate
	done   chan struct{}
}

// watch subscribes to the namespace's IPv4/IPv6 address and route
// changes; nil for the host's namespace, which the guest does not mirror.
func (n *netNS) watch(entry *log.Entry) (*netWatch, error) {
	if n.f == nil {
		return nil, nil
	}
	w := &netWatch{
		addrs:  make(chan netlink.AddrUpdate, 16),
		routes: make(chan netlink.RouteUpdate, 16),
		done:   make(chan struct{}),
	}
	h := netns.NsHandle(int(n.f.Fd()))
	onError := func(err error) {
		select {
		case <-w.done: // the socket was closed on purpose
		default:
			entry.WithError(err).Warn("network namespace subscription")
		}
	}
	if err := netlink.AddrSubscribeWithOptions(w.addrs, w.done, netlink.AddrSubscribeOptions{Namespace: &h, ErrorCallback: onError}); err != nil {
		close(w.done)
		return nil, fmt.Errorf("follow the addresses of %s: %w", n.f.Name(), err)
	}
	if err := netlink.RouteSubscribeWithOptions(w.routes, w.done, netlink.RouteSubscribeOptions{Namespace: &h, ErrorCallback: onError}); err != nil {
		w.Close()
		return nil, fmt.Errorf("follow the routes of %s: %w", n.f.Name(), err)
	}
	return w, nil
}

// Close ends the subscription. The library's readers exit once their
// socket is closed, after handing over what they hold: drain them so they
// are not left blocked on a send.
func (w *netWatch) Close() {
	close(w.done)
	go func() {
		for range w.addrs {
		}
	}()
	go func() {
		for range w.routes {
		}
	}()
}

// changed waits for the next change and for the burst it starts to
// settle; false when the subscription or ctx ended.
func (w *netWatch) changed(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case _, ok := <-w.addrs:
		if !ok {
			return false
		}
	case _, ok := <-w.routes:
		if !ok {
			return false
		}
	}
	settle := time.NewTimer(netSettle)
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-w.addrs:
		case <-w.routes:
		case <-settle.C:
			return true
		}
	}
}

// followNetNS gives the guest the namespace's configuration again each
// time it changes, until the container stops. applied is what the guest
// has now. A change that cannot be applied is logged and tried again with
// the next one; the policy decides every flow whatever the guest's
// addresses are, so a stale address costs reachability, never isolation.
func (c *Container) followNetNS(ctx context.Context, w *netWatch, applied nsLink) {
	entry := log.G(ctx).WithField("container", c.ID)
	defer func() {
		if w != nil {
			w.Close()
		}
	}()
	for {
		if !w.changed(ctx) {
			if ctx.Err() != nil {
				return
			}
			// The subscription ended on its own (a netlink socket
			// overrun ends it): subscribe again and read the namespace,
			// since changes may have been missed.
			w.Close()
			w = nil
			next, err := c.resubscribe(ctx, entry)
			if err != nil {
				entry.WithError(err).Warn("stopped following the container's network namespace")
				return
			}
			w = next
		}
		link, err := c.pod.netns.link()
		if err != nil {
			entry.WithError(err).Warn("read the container's network namespace after a change")
			continue
		}
		if link.equal(applied) {
			continue
		}
		if link.empty {
			// The guest's NIC cannot come back once detached; without
			// an interface in the namespace no flow can leave anyway.
			entry.Info("the container's network namespace has no interface left; the guest keeps its addresses")
			applied = link
			continue
		}
		if err := c.applyNetwork(ctx, link); err != nil {
			entry.WithError(err).Warn("give the guest its namespace's new network configuration")
			continue
		}
		entry.Infof("the guest follows its namespace: address %s gateway %s extra %v", link.addr, link.gateway, link.extra)
		applied = link
	}
}

// resubscribe subscribes to the namespace again, trying for a while.
func (c *Container) resubscribe(ctx context.Context, entry *log.Entry) (*netWatch, error) {
	var err error
	for i := 0; i < 10; i++ {
		var w *netWatch
		if w, err = c.pod.netns.watch(entry); err == nil {
			return w, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return nil, err
}
