// Command gondolin-mkimage builds the gondolin guest kernel and initramfs:
//
//	gondolin-mkimage --agent _output/lib/gondolin/gondolin-agent \
//	    --out _output/share/gondolin --cache .cache/images
//
// It builds the minimal guest kernel from Debian's linux-source-6.1 with the
// fragment in images/kernel (cached in --cache), resolves Debian's
// linux-image-cloud-amd64 through apt (run `apt-get update` first), downloads
// and verifies that package, and writes vmlinuz + initrd.img (minimal, the
// default), vmlinuz-stock + initrd-stock.img (Debian's), config-minimal and
// manifest.json. See package imagebuild.
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
	jobs := flag.Int("jobs", 0, "parallel jobs for the kernel build (default: number of CPUs)")
	verbose := flag.Bool("v", false, "show the kernel build's output")
	flag.Parse()
	announced := false
	opts.Kernel = imagebuild.MakeKernel{Jobs: *jobs, Log: func(line string) {
		if !announced {
			announced = true
			fmt.Println("compiling the minimal guest kernel (a few minutes; cached afterwards)")
		}
		if *verbose {
			fmt.Println("  " + line)
		}
	}}
	if opts.Agent == "" || opts.Out == "" || opts.Cache == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: gondolin-mkimage --agent FILE --out DIR --cache DIR [--kernel-package PKG] [--jobs N] [-v] [--force]")
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
		fmt.Printf("images up to date (minimal kernel %s; stock %s %s, kernel %s)\n", m.Minimal.KernelRelease, kin.Name, kin.Version, m.KernelRelease)
		return
	}
	how := "cached"
	if res.Downloaded {
		how = "downloaded"
	}
	kbuild := "from the cache"
	if res.KernelCompiled {
		kbuild = "compiled"
	}
	fmt.Printf("minimal kernel: %s from %s %s, fragment sha256 %s (%s)\n",
		m.Minimal.KernelRelease, m.Minimal.SourcePackage, m.Minimal.SourceVersion, m.Minimal.FragmentSHA256[:12], kbuild)
	fmt.Printf("kernel: %s %s -> %s %s (%s, sha256 %s ok)\n",
		m.Metapackage, m.MetapackageVersion, kin.Name, kin.Version, how, kin.SHA256[:12])
	var names []string
	for _, p := range m.LoadOrder {
		names = append(names, strings.TrimSuffix(path.Base(p), ".ko"))
	}
	fmt.Printf("stock initrd modules: %d in load order: %s\n", len(names), strings.Join(names, " "))
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
