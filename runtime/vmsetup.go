package runtime

import (
	"context"
	"sync"

	"github.com/containerd/log"

	"github.com/earendil-works/gondolin-containerd/config"
	"github.com/earendil-works/gondolin-containerd/vmm"
	"github.com/earendil-works/gondolin-containerd/vmm/backend"
)

// vmSetup is what every VM of a Runtime starts with, chosen once from the
// runtime config: the VMM backend, the file server and the accelerator.
// Each is the same for every container of a shim, and finding them costs
// a probe of the host (running virtiofsd --version, opening /dev/kvm).
type vmSetup struct {
	backend   vmm.Backend
	virtiofsd *vmm.Virtiofsd
	accel     vmm.Accelerator
}

// vmSetups chooses a Runtime's vmSetup on first use. A failure is not
// kept: the next create tries again (the operator may have installed the
// missing piece meanwhile).
type vmSetups struct {
	mu  sync.Mutex
	cfg *config.Config
	got *vmSetup
}

func (s *vmSetups) get(ctx context.Context) (*vmSetup, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.got != nil {
		return s.got, nil
	}
	b, err := backend.New(backend.Kind(s.cfg.VMM), s.cfg.QEMUPath)
	if err != nil {
		return nil, err
	}
	fsd, err := vmm.LookupVirtiofsd(ctx, s.cfg.VirtiofsdPath)
	if err != nil {
		return nil, err
	}
	fsd.OpenFiles = s.cfg.Limits.FileServerOpenFiles
	accel, reason, err := vmm.DetectAccelerator(vmm.Accelerator(s.cfg.Accelerator))
	if err != nil {
		return nil, err
	}
	log.G(ctx).WithFields(log.Fields{"vmm": s.cfg.VMM, "virtiofsd": fsd.Path, "accel": accel, "reason": reason}).Info("VM setup chosen")
	s.got = &vmSetup{backend: b, virtiofsd: fsd, accel: accel}
	return s.got, nil
}
