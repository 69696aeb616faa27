// Command mktestimage writes the busybox test image (docker.io/gondolin/busybox:latest)
// as a reproducible OCI image-layout tar for `ctr image import`.
//
//	mktestimage -out .cache/images/busybox-oci.tar [-busybox /bin/busybox] [-name NAME]
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
	name := flag.String("name", testimage.DefaultName, "image name (with a tag)")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: mktestimage -out FILE [-busybox PATH] [-name NAME]")
		os.Exit(2)
	}
	res, err := testimage.WriteFile(*out, testimage.Options{Busybox: *busybox, Name: *name})
	if err != nil {
		fmt.Fprintf(os.Stderr, "mktestimage: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%s %s (%d applet links) -> %s\n", res.Name, res.Manifest.Digest, res.Applets, *out)
}
