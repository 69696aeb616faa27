package testimage

import (
	"archive/tar"
	"fmt"
	"io"
)

// TarFile is one entry of a tar archive with its content: what the tests of
// this package and of distroimage check an archive or a layer with.
type TarFile struct {
	Hdr  *tar.Header
	Data []byte
}

// ReadTar returns the archive's entries in order.
func ReadTar(r io.Reader) ([]TarFile, error) {
	var out []TarFile
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading tar: %w", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("reading tar: %s: %w", h.Name, err)
		}
		out = append(out, TarFile{h, data})
	}
}

// ByName indexes entries by name (the last of a name wins).
func ByName(files []TarFile) map[string]TarFile {
	m := map[string]TarFile{}
	for _, f := range files {
		m[f.Hdr.Name] = f
	}
	return m
}
