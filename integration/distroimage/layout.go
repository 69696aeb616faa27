package distroimage

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/earendil-works/gondolin-containerd/integration/testimage"
)

// layerFile is a gzip-compressed layer in a temporary file.
type layerFile struct {
	path   string
	desc   testimage.Descriptor // of the compressed blob
	diffID string               // digest of the uncompressed tar
	size   int64                // size of the uncompressed tar
	stats  *PackStats
}

// writeLayer packs root into a compressed layer in a new temporary file in dir. The
// layer goes to disk, not memory: a distro tree is a hundred megabytes.
func writeLayer(dir, root string, mtime time.Time) (*layerFile, error) {
	f, err := os.CreateTemp(dir, ".layer-*.tar.gz")
	if err != nil {
		return nil, fmt.Errorf("creating the layer file: %w", err)
	}
	lf, err := fillLayer(f, root, mtime)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("writing the layer file: %w", cerr)
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, err
	}
	lf.path = f.Name()
	return lf, nil
}

func fillLayer(f *os.File, root string, mtime time.Time) (*layerFile, error) {
	blob := newCounter()
	zw, err := gzip.NewWriterLevel(io.MultiWriter(f, blob), gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	diff := newCounter()
	stats, err := PackLayer(io.MultiWriter(zw, diff), root, mtime)
	if err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compressing the layer: %w", err)
	}
	return &layerFile{
		desc:   testimage.Descriptor{MediaType: testimage.MediaTypeLayerGz, Digest: blob.digest(), Size: blob.n},
		diffID: diff.digest(),
		size:   diff.n,
		stats:  stats,
	}, nil
}

// layout is the layer's image layout (testimage.WriteLayout, the one writer
// of the test images' archives).
func (lf *layerFile) layout() testimage.Layer {
	return testimage.Layer{Desc: lf.desc, DiffID: lf.diffID, Path: lf.path}
}

// counter hashes and counts what is written to it.
type counter struct {
	h hash.Hash
	n int64
}

func newCounter() *counter { return &counter{h: sha256.New()} }

func (c *counter) Write(b []byte) (int, error) {
	c.h.Write(b)
	c.n += int64(len(b))
	return len(b), nil
}

func (c *counter) digest() string { return "sha256:" + hex.EncodeToString(c.h.Sum(nil)) }
