package auditlog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Source is one container's audit files.
type Source struct {
	Namespace, Container string
	// Live is <dir>/<namespace>/<container>.jsonl; the rotated file is
	// Live + ".1".
	Live string
}

func (s Source) rotated() string { return s.Live + ".1" }

// Name is namespace/container.
func (s Source) Name() string { return s.Namespace + "/" + s.Container }

const (
	liveSuffix    = ".jsonl"
	rotatedSuffix = ".jsonl.1"
)

// List returns every container's audit files under dir, in namespace (or
// all namespaces for ""), sorted by namespace and container.
func List(dir, namespace string) ([]Source, error) {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("audit directory %s does not exist: no container has written an audit record there (the runtime config's audit_dir says where they go; --audit-dir reads another)", dir)
	}
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("audit directory %s is not a directory", dir)
	}
	var namespaces []string
	if namespace != "" {
		namespaces = []string{namespace}
	} else {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if e.IsDir() {
				namespaces = append(namespaces, e.Name())
			}
		}
	}
	var out []Source
	for _, ns := range namespaces {
		ents, err := os.ReadDir(filepath.Join(dir, ns))
		if errors.Is(err, fs.ErrNotExist) && namespace != "" {
			return nil, fmt.Errorf("namespace %s has no audit files in %s", ns, dir)
		}
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, e := range ents {
			name := e.Name()
			var id string
			switch {
			case strings.HasSuffix(name, liveSuffix):
				id = strings.TrimSuffix(name, liveSuffix)
			case strings.HasSuffix(name, rotatedSuffix):
				// Only the rotated file, in the moment between the
				// rotation's rename and the new file's creation.
				id = strings.TrimSuffix(name, rotatedSuffix)
			default:
				continue
			}
			if id == "" || seen[id] || e.IsDir() {
				continue
			}
			seen[id] = true
			out = append(out, Source{Namespace: ns, Container: id, Live: filepath.Join(dir, ns, id+liveSuffix)})
		}
	}
	slices.SortFunc(out, func(a, b Source) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

// maxNamed is how many matches an ambiguous prefix's error names.
const maxNamed = 8

// Find returns the audit files of one container: its full ID, or a
// prefix of it that names one container only (as docker ps shows 12
// characters of a Docker container's ID), in namespace or, for "", any
// namespace.
func Find(dir, namespace, container string) (Source, error) {
	if container == "" || strings.ContainsAny(container, "/\x00") || container == "." || container == ".." {
		return Source{}, fmt.Errorf("container %q: expected a container ID (or a unique prefix of one)", container)
	}
	all, err := List(dir, namespace)
	if err != nil {
		return Source{}, err
	}
	var exact, prefixed []Source
	for _, s := range all {
		switch {
		case s.Container == container:
			exact = append(exact, s)
		case strings.HasPrefix(s.Container, container):
			prefixed = append(prefixed, s)
		}
	}
	where := dir
	if namespace != "" {
		where = filepath.Join(dir, namespace)
	}
	matches := exact
	if len(matches) == 0 {
		matches = prefixed
	}
	switch len(matches) {
	case 0:
		return Source{}, fmt.Errorf("no audit file for container %s in %s (the runtime config's audit_dir says where they go; --audit-dir reads another)", container, where)
	case 1:
		return matches[0], nil
	}
	var names []string
	for i, s := range matches {
		if i == maxNamed {
			names = append(names, fmt.Sprintf("and %d more", len(matches)-maxNamed))
			break
		}
		names = append(names, s.Name())
	}
	return Source{}, fmt.Errorf("container %s matches %d containers in %s: %s; give more of the ID, or --namespace", container, len(matches), where, strings.Join(names, ", "))
}
