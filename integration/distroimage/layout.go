package distroimage

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"sort"
	"strings"
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

// imageMeta is what the config and index say about the image.
type imageMeta struct {
	name    string
	created time.Time
	config  testimage.ImageConfig
	history testimage.History
}

// layoutResult describes a written image layout.
type layoutResult struct {
	manifest testimage.Descriptor
	config   testimage.Descriptor
}

// writeLayout writes an OCI image-layout tar archive with the single layer lf to w:
// what `ctr image import` reads. Entries are sorted and share one mtime, so the same
// layer and metadata give the same bytes.
func writeLayout(w io.Writer, meta imageMeta, lf *layerFile) (*layoutResult, error) {
	tag, err := refName(meta.name)
	if err != nil {
		return nil, err
	}
	created := meta.created.UTC().Format(time.RFC3339)
	meta.history.Created = created
	config, err := json.Marshal(testimage.Image{
		Created:      created,
		Architecture: "amd64",
		OS:           "linux",
		Config:       meta.config,
		RootFS:       testimage.RootFS{Type: "layers", DiffIDs: []string{lf.diffID}},
		History:      []testimage.History{meta.history},
	})
	if err != nil {
		return nil, err
	}
	res := &layoutResult{config: describe(testimage.MediaTypeConfig, config)}
	manifest, err := json.Marshal(testimage.Manifest{
		SchemaVersion: 2,
		MediaType:     testimage.MediaTypeManifest,
		Config:        res.config,
		Layers:        []testimage.Descriptor{lf.desc},
	})
	if err != nil {
		return nil, err
	}
	res.manifest = describe(testimage.MediaTypeManifest, manifest)
	index, err := indexJSON(res.manifest, meta.name, tag, created)
	if err != nil {
		return nil, err
	}

	files := []layoutFile{
		{name: blobName(res.config), data: config},
		{name: blobName(lf.desc), path: lf.path, size: lf.desc.Size},
		{name: blobName(res.manifest), data: manifest},
		{name: "index.json", data: index},
		{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	if err := writeLayoutTar(w, files, meta.created); err != nil {
		return nil, fmt.Errorf("writing the image layout: %w", err)
	}
	return res, nil
}

// indexJSON is the layout's index.json: the manifest, named the way containerd's own
// exporter names it (full name and tag), so that import gives it that name.
func indexJSON(manifest testimage.Descriptor, name, tag, created string) ([]byte, error) {
	manifest.Annotations = map[string]string{
		testimage.AnnotationImageName: name,
		testimage.AnnotationRefName:   tag,
		testimage.AnnotationCreated:   created,
	}
	manifest.Platform = &testimage.Platform{Architecture: "amd64", OS: "linux"}
	return json.Marshal(testimage.Index{
		SchemaVersion: 2,
		MediaType:     testimage.MediaTypeIndex,
		Manifests:     []testimage.Descriptor{manifest},
	})
}

// layoutFile is one file of the image layout: data in memory, or size bytes at path.
type layoutFile struct {
	name string
	data []byte
	path string
	size int64
}

func writeLayoutTar(w io.Writer, files []layoutFile, mtime time.Time) error {
	tw := tar.NewWriter(w)
	mtime = mtime.UTC().Truncate(time.Second)
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: mtime}); err != nil {
			return err
		}
	}
	for _, f := range files {
		size := int64(len(f.data))
		if f.path != "" {
			size = f.size
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: size, ModTime: mtime}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		if err := writeContent(tw, f); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}
	return tw.Close()
}

func writeContent(w io.Writer, f layoutFile) error {
	if f.path == "" {
		_, err := w.Write(f.data)
		return err
	}
	_, err := copyFile(w, f.path, f.size)
	return err
}

// refName returns the tag of a full image name (for org.opencontainers.image.ref.name).
func refName(name string) (string, error) {
	if strings.Contains(name, "@") {
		return "", fmt.Errorf("image name %q: give a tag, not a digest", name)
	}
	slash := strings.LastIndex(name, "/")
	colon := strings.LastIndex(name, ":")
	if colon <= slash || colon == len(name)-1 {
		return "", fmt.Errorf("image name %q has no tag (want e.g. %s)", name, DefaultName)
	}
	return name[colon+1:], nil
}

func blobName(d testimage.Descriptor) string {
	return "blobs/sha256/" + strings.TrimPrefix(d.Digest, "sha256:")
}

func describe(mediaType string, b []byte) testimage.Descriptor {
	s := sha256.Sum256(b)
	return testimage.Descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(s[:]), Size: int64(len(b))}
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
