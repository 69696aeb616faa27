// Command mktestimage writes the busybox test image (docker.io/gondolin/busybox:latest)
// as a reproducible OCI image-layout tar for `ctr image import`.
//
//	mktestimage -out .cache/images/busybox-oci.tar [-busybox /bin/busybox] [-name NAME] [-pause]
//
// -pause makes the pause image of the tests' CRI pods instead
// (testimage.PauseName, with testimage.PauseCmd as its command).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/earendil-works/gondolin-containerd/integration/testimage"
)

func main() {
	out := flag.String("out", "", "where to write the OCI image-layout tar (required)")
	busybox := flag.String("busybox", testimage.DefaultBusybox, "static busybox binary to package")
	name := flag.String("name", "", "image name (with a tag; default "+testimage.DefaultName+", or "+testimage.PauseName+" with -pause)")
	pause := flag.Bool("pause", false, "make the CRI pods' pause image: its command waits for SIGTERM and reaps orphans")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: mktestimage -out FILE [-busybox PATH] [-name NAME] [-pause]")
		os.Exit(2)
	}
	opts := testimage.Options{Busybox: *busybox, Name: *name}
	if *pause {
		opts.Cmd = testimage.PauseCmd
		if opts.Name == "" {
			opts.Name = testimage.PauseName
		}
	}
	res, err := testimage.WriteFile(*out, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mktestimage: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%s %s (%d applet links) -> %s\n", res.Name, res.Manifest.Digest, res.Applets, *out)
}
