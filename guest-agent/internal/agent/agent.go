// Package agent is gondolin-agent's PID 1 mode: boot the guest, then serve
// the host over the channel until Shutdown powers the VM off.
package agent

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agentlog"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/boot"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/channel"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/container"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/netconfig"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/reaper"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/service"
)

// Main runs the agent as PID 1. It never returns: on a fatal error it logs
// and powers the VM off, so the host sees QEMU exit and quotes the console.
func Main() {
	if err := run(); err != nil {
		agentlog.Errorf("fatal: %v", err)
	}
	agentlog.Infof("powering off")
	time.Sleep(100 * time.Millisecond)
	if err := boot.PowerOff(); err != nil {
		agentlog.Errorf("power off: %v", err)
	}
	select {}
}

func run() error {
	agentlog.Infof("starting (version %s)", service.Version)
	if err := boot.Setup(); err != nil {
		return err
	}
	// PID 1 gets only the signals it handles; keep those that would make
	// the Go runtime exit (and the kernel panic) harmless.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	go func() {
		for s := range sigs {
			agentlog.Infof("ignoring signal %v", s)
		}
	}()

	r := reaper.New()
	go r.Run(nil)

	registry := channel.NewRegistry()
	mgr := container.NewManager(container.DefaultConfig(), r, registry)
	svc := &service.Service{
		Containers:    mgr,
		Network:       &netconfig.Configurator{},
		KernelRelease: boot.KernelRelease(),
		PowerOffDelay: 100 * time.Millisecond,
		SetClock:      boot.SetClock,
		AddEntropy:    boot.AddEntropy,
		PowerOff: func() {
			agentlog.Infof("powering off")
			if err := boot.PowerOff(); err != nil {
				agentlog.Errorf("power off: %v", err)
			}
		},
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	api.RegisterAgentService(srv, svc)
	control := channel.NewListener()
	go func() {
		if err := srv.Serve(context.Background(), control); err != nil {
			agentlog.Errorf("ttrpc server: %v", err)
		}
	}()

	// In a VM to be saved as a snapshot, before the channel opens: the
	// snapshot is saved once it has, and should hold the codecs built and
	// the prestarted init running.
	if boot.KernelArg(api.SnapshotKernelArg) {
		warmed := warmCodecs()
		agentlog.Debugf("built the codecs of %d message types", warmed)
		if err := mgr.Prestart(context.Background()); err != nil {
			agentlog.Warnf("%v; the first container's init will be forked when it is created", err)
		}
	}

	port := channel.NewSerialPort(api.ChannelPortName)
	dev, err := port.Find(10 * time.Second)
	if err != nil {
		return err
	}
	ms, err := boot.UptimeMillis()
	if err != nil {
		agentlog.Warnf("read uptime: %v", err)
	}
	svc.SetReady(ms)
	agentlog.Infof("ready after %d ms since boot; channel %s on %s, kernel %s", ms, api.ChannelPortName, dev, svc.KernelRelease)
	return channel.NewServer(control, registry).Run(context.Background(), port)
}
