// Command gondolin-mkimage builds the gondolin guest kernel and initramfs:
//
//	gondolin-mkimage --agent _output/lib/gondolin/gondolin-agent \
//	    --out _output/share/gondolin --cache .cache/images
//
// It resolves Debian's linux-image-cloud-amd64 through apt (run `apt-get
// update` first), downloads and verifies the kernel package, and writes
// vmlinuz, initrd.img and manifest.json. See package imagebuild.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path"
	"strings"
	"syscall"

	"github.com/earendil-works/gondolin-containerd/images/imagebuild"
)

func main() {
	var opts imagebuild.Options
	flag.StringVar(&opts.Agent, "agent", "", "guest agent binary (static), installed as /init")
	flag.StringVar(&opts.Out, "out", "", "output directory for vmlinuz, initrd.img, manifest.json")
	flag.StringVar(&opts.Cache, "cache", "", "cache directory for the kernel package")
	flag.StringVar(&opts.Metapackage, "kernel-package", imagebuild.DefaultMetapackage, "Debian kernel metapackage to resolve")
	flag.BoolVar(&opts.Force, "force", false, "rebuild even if the outputs are up to date")
	flag.Parse()
	if opts.Agent == "" || opts.Out == "" || opts.Cache == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: gondolin-mkimage --agent FILE --out DIR --cache DIR [--kernel-package PKG] [--force]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := imagebuild.Build(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gondolin-mkimage:", err)
		os.Exit(1)
	}
	report(res)
}

func report(res *imagebuild.Result) {
	m := res.Manifest
	kin, _ := m.Input(imagebuild.RoleKernelPackage)
	if res.UpToDate {
		fmt.Printf("images up to date (%s %s, kernel %s)\n", kin.Name, kin.Version, m.KernelRelease)
		return
	}
	how := "cached"
	if res.Downloaded {
		how = "downloaded"
	}
	fmt.Printf("kernel: %s %s -> %s %s (%s, sha256 %s ok)\n",
		m.Metapackage, m.MetapackageVersion, kin.Name, kin.Version, how, kin.SHA256[:12])
	var names []string
	for _, p := range m.LoadOrder {
		names = append(names, strings.TrimSuffix(path.Base(p), ".ko"))
	}
	fmt.Printf("modules: %d in load order: %s\n", len(names), strings.Join(names, " "))
	if len(m.BuiltIn) > 0 {
		fmt.Printf("built in (not shipped): %s\n", strings.Join(m.BuiltIn, " "))
	}
	for _, o := range m.Outputs {
		fmt.Printf("wrote %s (%s, sha256 %s)\n", o.Name, size(o.Size), o.SHA256[:12])
	}
}

func size(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
