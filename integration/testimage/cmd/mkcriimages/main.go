// Command mkcriimages builds the stand-ins of the images critest pulls
// (testimage.CRIImages) and pushes them to a plain-HTTP registry, each under
// its repository path without the host: registry.k8s.io/pause:3.9 becomes
// pause:3.9 there, so one registry mirrors registry.k8s.io, gcr.io and
// k8s.gcr.io (hack/critest.sh).
//
//	mkcriimages -helper PATH -registry 127.0.0.1:PORT [-busybox /bin/busybox]
//	mkcriimages -helper PATH -list
//
// It prints one line per name: NAME MANIFEST-DIGEST IMAGE-ID (the config's
// digest, what the CRI calls the image's id). -list builds and prints
// without pushing.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/earendil-works/gondolin-containerd/integration/testimage"
)

func main() {
	helper := flag.String("helper", "", "the static critest-helper binary (go build ./integration/testimage/cmd/critest-helper with CGO_ENABLED=0; required)")
	registry := flag.String("registry", "", "HOST:PORT of the plain-HTTP registry to push to")
	list := flag.Bool("list", false, "build and print, push nothing")
	busybox := flag.String("busybox", testimage.DefaultBusybox, "static busybox binary to package")
	flag.Parse()
	if *helper == "" || flag.NArg() > 0 || (*registry == "") == !*list {
		fmt.Fprintln(os.Stderr, "usage: mkcriimages -helper PATH (-registry HOST:PORT | -list) [-busybox PATH]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *helper, *busybox, *registry); err != nil {
		fmt.Fprintf(os.Stderr, "mkcriimages: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, helperPath, busybox, registry string) error {
	helper, err := os.ReadFile(helperPath)
	if err != nil {
		return fmt.Errorf("reading critest-helper: %w", err)
	}
	client := &http.Client{Timeout: 2 * time.Minute}
	// Which image each repo:tag was pushed as: two stand-ins under one name
	// would leave the registry holding whichever came last.
	pushed := map[string]string{}
	// Most stand-ins have the same files: compress each layer once.
	layers := testimage.NewLayerCache()
	for _, img := range testimage.CRIImages(busybox, helper) {
		img.Options.Layers = layers
		b, err := testimage.BuildBlobs(img.Options)
		if err != nil {
			return fmt.Errorf("building %s: %w", img.Names[0], err)
		}
		repos, err := testimage.RepoTags(img.Names)
		if err != nil {
			return err
		}
		for repo, tags := range repos {
			for _, t := range tags {
				if prev, ok := pushed[repo+":"+t]; ok && prev != b.Manifest.Digest {
					return fmt.Errorf("%s:%s names two different stand-ins (%s and %s)", repo, t, prev, b.Manifest.Digest)
				}
				pushed[repo+":"+t] = b.Manifest.Digest
			}
			if registry == "" {
				continue
			}
			if err := testimage.Push(ctx, client, "http://"+registry, repo, tags, b); err != nil {
				return err
			}
		}
		for _, n := range img.Names {
			fmt.Printf("%s %s %s\n", n, b.Manifest.Digest, b.Config.Digest)
		}
	}
	return nil
}
