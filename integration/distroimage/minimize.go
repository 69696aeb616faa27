package distroimage

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// DpkgExcludes goes to /etc/dpkg/dpkg.cfg.d/gondolin-minimal, so that packages a test
// installs later leave out what minimize removed (as Debian's slim images do).
const DpkgExcludes = `# Written by gondolin's distro image builder (integration/distroimage): the image has
# no documentation, manual pages or translations; keep it that way.
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/lintian/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
`

// minimize strips from the tree at root what a test container never reads: apt's
// package lists and downloaded .debs (two thirds of a fresh debootstrap), documentation
// except the copyright files, manual pages, translations and logs. It also drops what
// debootstrap copied from the build host (/etc/resolv.conf, /etc/hostname): the
// runtime provides both.
func minimize(root string) error {
	steps := []struct {
		what string
		do   func() error
	}{
		{"apt lists", func() error { return emptyDir(root, "var/lib/apt/lists", "partial", "lock") }},
		{"apt caches", func() error { return emptyDir(root, "var/cache/apt", "archives") }},
		{"downloaded packages", func() error { return emptyDir(root, "var/cache/apt/archives", "partial", "lock") }},
		{"manual pages", func() error { return emptyDir(root, "usr/share/man") }},
		{"info pages", func() error { return emptyDir(root, "usr/share/info") }},
		{"lintian overrides", func() error { return emptyDir(root, "usr/share/lintian") }},
		{"translations", func() error { return emptyDir(root, "usr/share/locale", "locale.alias") }},
		{"documentation", func() error { return stripDocs(root) }},
		{"logs", func() error { return truncateFiles(filepath.Join(root, "var/log")) }},
		{"backup files", func() error {
			return removeGlobs(root, "var/cache/debconf/*-old", "var/lib/dpkg/*-old", "var/cache/ldconfig/aux-cache")
		}},
		{"host files", func() error { return hostFiles(root) }},
		{"dpkg excludes", func() error {
			return writeFile(root, "etc/dpkg/dpkg.cfg.d/gondolin-minimal", DpkgExcludes)
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("minimizing the image (%s): %w", s.what, err)
		}
	}
	return nil
}

// emptyDir removes everything in root/rel except the entries named in keep. A missing
// directory is fine: not every package set has every directory.
func emptyDir(root, rel string, keep ...string) error {
	dir := filepath.Join(root, rel)
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if slices.Contains(keep, e.Name()) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// stripDocs empties every package's /usr/share/doc directory but its copyright file:
// the licenses travel with the binaries. Symlinked doc directories (one package
// pointing at another's) are kept, they cost nothing.
func stripDocs(root string) error {
	docs := filepath.Join(root, "usr/share/doc")
	ents, err := os.ReadDir(docs)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() { // DirEntry.IsDir does not follow symlinks
			if err := emptyDir(docs, e.Name(), "copyright"); err != nil {
				return err
			}
		}
	}
	return nil
}

// truncateFiles empties every regular file below dir but keeps it, with its owner and
// mode: lastlog, wtmp and btmp must exist with the right group for login tools.
func truncateFiles(dir string) error {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			return os.Truncate(p, 0)
		}
		return nil
	})
	if os.IsNotExist(err) {
		return nil
	}
	return err
}

func removeGlobs(root string, patterns ...string) error {
	for _, pat := range patterns {
		matches, err := filepath.Glob(filepath.Join(root, pat))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if err := os.Remove(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// hostFiles replaces what debootstrap copied from the build host. resolv.conf stays,
// empty, as the target a runtime bind-mounts its own over.
func hostFiles(root string) error {
	if err := os.Remove(filepath.Join(root, "etc/hostname")); err != nil && !os.IsNotExist(err) {
		return err
	}
	return writeFile(root, "etc/resolv.conf", "")
}

// writeFile writes a root-owned 0644 file at root/rel, replacing a symlink there
// rather than writing through it (out of the tree).
func writeFile(root, rel, content string) error {
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		return err
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Chmod(p, 0o644) // whatever the umask
}
