// Command mkdistroimage makes sure the Debian test image (docker.io/gondolin/debian-curl:latest:
// bookworm minbase with curl and ca-certificates) is in the cache, running debootstrap
// only when it is not, and prints one line for scripts: NAME DIGEST ARCHIVE.
// Progress goes to stderr. It must run as root (debootstrap chroots and mknods).
//
//	mkdistroimage -cache .cache/images [-name NAME] [-suite bookworm] [-mirror URL] [-force]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/earendil-works/gondolin-containerd/integration/distroimage"
)

func main() {
	var opts distroimage.Options
	var include string
	flag.StringVar(&opts.CacheDir, "cache", "", "cache directory for the archive (required)")
	flag.StringVar(&opts.Name, "name", distroimage.DefaultName, "image name (with a tag)")
	flag.StringVar(&opts.Suite, "suite", distroimage.DefaultSuite, "Debian suite")
	flag.StringVar(&opts.Mirror, "mirror", distroimage.DefaultMirror, "Debian archive to install from")
	flag.StringVar(&opts.Keyring, "keyring", distroimage.DefaultKeyring, "keyring to verify the archive with")
	flag.StringVar(&include, "include", strings.Join(distroimage.DefaultInclude, ","), "packages beyond minbase, comma-separated")
	flag.BoolVar(&opts.Force, "force", false, "rebuild even if the cache has the archive")
	flag.Parse()
	if opts.CacheDir == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: mkdistroimage -cache DIR [-name NAME] [-suite SUITE] [-mirror URL] [-keyring FILE] [-include PKG,...] [-force]")
		os.Exit(2)
	}
	opts.Include = strings.Split(include, ",")
	opts.Log = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "mkdistroimage: "+format+"\n", args...)
	}
	opts.Bootstrapper = distroimage.Debootstrap{Progress: func(line string) { opts.Log("%s", line) }}

	// Ctrl-C stops debootstrap and still removes the half-built tree (and its mounts).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	res, err := distroimage.Ensure(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkdistroimage: %v\n", err)
		os.Exit(1)
	}
	how := fmt.Sprintf("built in %s, debootstrap %s", time.Since(start).Round(time.Second), res.Bootstrap.Round(time.Second))
	if res.Cached {
		how = "from the cache"
	}
	opts.Log("%s: %.1f MB, %s (key %s)", res.Name, float64(res.Size)/1e6, how, res.Key[:16])
	fmt.Printf("%s %s %s\n", res.Name, res.Digest, res.Path)
}
