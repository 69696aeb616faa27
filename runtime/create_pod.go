package runtime

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/containerd/errdefs"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/oci"
)

// The create steps of a CRI pod (docs/pods.md): the sandbox's pod share,
// and the steps of a container that joins its sandbox's running VM.

// memberSteps create a CRI pod's container in the VM its sandbox booted:
// its root and binds go through the pod's share, its processes into the
// running guest.
func (cr *creation) memberSteps() []step {
	return []step{
		{"find the pod", "pod", cr.findPod},
		{"state directory", "state", cr.memberStateDirectory},
		{"rootfs", "rootfs", cr.mountRootfs},
		{"read-only root", "readonly_root", cr.readonlyRoot},
		{"bind mounts", "binds", cr.binds},
		{"pod share entry", "pod_entry", cr.podEntry},
		{"create hooks", "hooks", cr.createHooks},
		{"stdio", "stdio", cr.stdio},
		{"create in the guest", "guest_create", cr.guestCreate},
		{"seal the read-only root", "seal", cr.sealRoot},
		{"join the pod", "join", cr.joinPod},
	}
}

// podShare makes a CRI pod's share for its sandbox (podshare.go), the
// VM's one share, with the sandbox's own root and binds its first entry.
func (cr *creation) podShare(ctx context.Context) (undoFunc, error) {
	if cr.place.Role != oci.PodSandbox && cr.pooled == nil {
		return nil, nil
	}
	p, h := cr.c.pod, cr.c.host
	dir, err := h.recordPodShare() // recorded first: a crash mid-mount still gets unmounted
	if err != nil {
		return nil, err
	}
	// A pool VM's came with it (moved to dir by takeOver).
	export := filepath.Join(dir, podExportName)
	if cr.pooled == nil {
		if export, err = preparePodShare(dir); err != nil {
			return nil, err
		}
	}
	p.shareDir = dir
	undo := func(context.Context) error {
		return errors.Join(h.releasePodEntry(), h.releasePodShare())
	}
	if err := cr.publish(p); err != nil {
		return nil, errors.Join(err, undo(ctx))
	}
	cr.shares = []share{{tag: api.PodTag, dir: export, submounts: true}}
	return undo, nil
}

// findPod finds the pod whose sandbox the container names, running in
// this shim, maps the container's namespaces onto its VM, and checks that
// it asks for no policy of its own.
func (cr *creation) findPod(context.Context) (undoFunc, error) {
	p, err := cr.r.podOf(cr.opts.ID, cr.place.SandboxID)
	if err != nil {
		return nil, err
	}
	if cr.join, err = oci.PodNamespaces(cr.c.spec, p.vmmPid()); err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	if err := oci.CheckPodAnnotations(p.owner.spec.Annotations, cr.c.spec.Annotations); err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	cr.c.pod = p
	return nil, nil
}

// memberStateDirectory starts a pod's container's host state, recorded in
// its pod's first: containerd runs no `shim delete` for it, so a shim that
// dies leaves it to the sandbox's cleanup.
func (cr *creation) memberStateDirectory(ctx context.Context) (undoFunc, error) {
	p := cr.c.pod
	dir := StateDir(cr.r.cfg.StateRoot, cr.r.cfg.Namespace, cr.opts.ID)
	if err := p.host.recordMember(dir); err != nil {
		return nil, err
	}
	h, err := newHostState(ctx, cr.r.cfg.StateRoot, cr.r.cfg.Namespace, cr.opts.ID, cr.opts.Bundle)
	if err != nil {
		return nil, errors.Join(err, p.host.dropMember(dir))
	}
	cr.c.host = h
	return func(context.Context) error {
		if err := h.cleanup(); err != nil {
			return err
		}
		return p.host.dropMember(dir)
	}, nil
}

// podEntry binds a pod's container's root and binds into its pod's share.
func (cr *creation) podEntry(context.Context) (undoFunc, error) {
	if err := cr.publish(cr.c.pod); err != nil {
		return nil, err
	}
	return func(context.Context) error { return cr.c.host.releasePodEntry() }, nil
}

// publish binds the container's root and binds share into its entry in
// pod p's share, recorded first.
func (cr *creation) publish(p *pod) error {
	entry := podEntry(p.shareDir, cr.opts.ID)
	if err := cr.c.host.recordPodEntry(entry); err != nil {
		return err
	}
	return publishInPod(entry, cr.shares[0].dir, cr.bindsDir)
}

// joinPod makes the created container one of its pod's, unless the pod's
// VM was torn down meanwhile.
func (cr *creation) joinPod(context.Context) (undoFunc, error) {
	p := cr.c.pod
	if err := p.add(cr.c); err != nil {
		return nil, err
	}
	return func(context.Context) error {
		p.leave(cr.c)
		return nil
	}, nil
}
