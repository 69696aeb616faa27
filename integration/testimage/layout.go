package testimage

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// Layer is an image's one compressed layer: its bytes in memory (Data), or
// Desc.Size bytes of the file at Path (a distro's layer is a hundred megabytes).
type Layer struct {
	Desc   Descriptor // of the compressed blob
	DiffID string     // digest of the uncompressed tar
	Data   []byte
	Path   string
}

// Meta is what the image's config and the layout's index say about it.
type Meta struct {
	Name    string
	Created time.Time // also every archive entry's mtime
	Config  ImageConfig
	History History // of the one layer; its Created is set to Created
}

// Layout describes a written image layout.
type Layout struct {
	Config   Descriptor
	Manifest Descriptor
}

// Assembled is an image's config and manifest, for one layer.
type Assembled struct {
	Config, Manifest         Descriptor
	ConfigJSON, ManifestJSON []byte
}

// Assemble makes the image config and manifest of the single layer.
func Assemble(meta Meta, layer Layer) (*Assembled, error) {
	created := meta.Created.UTC().Truncate(time.Second).Format(time.RFC3339)
	meta.History.Created = created
	config, err := json.Marshal(Image{
		Created:      created,
		Architecture: "amd64",
		OS:           "linux",
		Config:       meta.Config,
		RootFS:       RootFS{Type: "layers", DiffIDs: []string{layer.DiffID}},
		History:      []History{meta.History},
	})
	if err != nil {
		return nil, err
	}
	a := &Assembled{Config: describe(MediaTypeConfig, config), ConfigJSON: config}
	manifest, err := json.Marshal(Manifest{
		SchemaVersion: 2,
		MediaType:     MediaTypeManifest,
		Config:        a.Config,
		Layers:        []Descriptor{layer.Desc},
	})
	if err != nil {
		return nil, err
	}
	a.Manifest, a.ManifestJSON = describe(MediaTypeManifest, manifest), manifest
	return a, nil
}

// WriteLayout writes an OCI image-layout tar archive holding the single layer
// to w: what `ctr image import` reads. Entries are sorted and share one mtime,
// so the same layer and metadata give the same bytes. It is the one layout
// writer of the test images (this package's and distroimage's).
func WriteLayout(w io.Writer, meta Meta, layer Layer) (*Layout, error) {
	tag, err := RefName(meta.Name)
	if err != nil {
		return nil, err
	}
	mtime := meta.Created.UTC().Truncate(time.Second)
	a, err := Assemble(meta, layer)
	if err != nil {
		return nil, err
	}
	res := &Layout{Config: a.Config, Manifest: a.Manifest}
	index, err := indexJSON(res.Manifest, meta.Name, tag, mtime.Format(time.RFC3339))
	if err != nil {
		return nil, err
	}

	files := []layoutFile{
		{name: blobName(res.Config), data: a.ConfigJSON},
		{name: blobName(layer.Desc), data: layer.Data, path: layer.Path, size: layer.Desc.Size},
		{name: blobName(res.Manifest), data: a.ManifestJSON},
		{name: "index.json", data: index},
		{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	if err := writeLayoutTar(w, files, mtime); err != nil {
		return nil, fmt.Errorf("writing the image layout: %w", err)
	}
	return res, nil
}

// indexJSON is the layout's index.json: the manifest, named the way
// containerd's own exporter names it (full name and tag), so that import
// gives it that name.
func indexJSON(manifest Descriptor, name, tag, created string) ([]byte, error) {
	manifest.Annotations = map[string]string{
		AnnotationImageName: name,
		AnnotationRefName:   tag,
		AnnotationCreated:   created,
	}
	manifest.Platform = &Platform{Architecture: "amd64", OS: "linux"}
	return json.Marshal(Index{
		SchemaVersion: 2,
		MediaType:     MediaTypeIndex,
		Manifests:     []Descriptor{manifest},
	})
}

// layoutFile is one file of the image layout: data in memory, or size bytes
// at path.
type layoutFile struct {
	name string
	data []byte
	path string
	size int64
}

func writeLayoutTar(w io.Writer, files []layoutFile, mtime time.Time) error {
	tw := tar.NewWriter(w)
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
	src, err := os.Open(f.path)
	if err != nil {
		return err
	}
	defer src.Close()
	if _, err := io.CopyN(w, src, f.size); err != nil {
		return fmt.Errorf("copying %d bytes: %w", f.size, err)
	}
	return nil
}

// RefName returns the tag of a full image name, for
// org.opencontainers.image.ref.name (containerd's exporter puts the tag
// there, and the full name in io.containerd.image.name).
func RefName(name string) (string, error) {
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

func blobName(d Descriptor) string {
	return "blobs/sha256/" + strings.TrimPrefix(d.Digest, "sha256:")
}

func describe(mediaType string, b []byte) Descriptor {
	return Descriptor{MediaType: mediaType, Digest: digest(b), Size: int64(len(b))}
}
