package hostinstall

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Change is one file a Plan writes or removes.
type Change struct {
	Path string
	// Old is the file as read; nil when it does not exist.
	Old []byte
	// New is what it becomes; nil removes it.
	New []byte
	// NoBackup is set for a file exactly as install wrote it: removing it
	// loses nothing.
	NoBackup bool
}

// Plan is what install or uninstall does to one daemon's configuration.
type Plan struct {
	// Daemon is the daemon the files configure: containerd or dockerd.
	Daemon string
	// Changes are in the order they must be applied: a drop-in exists
	// before an import names it, and an import is gone before its file.
	Changes []Change
	// Notes say what the plan does, or why it does nothing.
	Notes []string
	// Reload says how to make the daemon read the changes.
	Reload string
}

// Diff shows the plan's changes as unified diffs.
func (p Plan) Diff() string {
	var b strings.Builder
	for _, c := range p.Changes {
		b.WriteString(unifiedDiff(c.Path, c.Old, c.New))
	}
	return b.String()
}

func readOptional(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if b == nil {
		b = []byte{} // exists, empty: not the nil of an absent file
	}
	return b, nil
}

// PlanContainerd reads containerd's config files and plans install (or,
// with install false, uninstall). It writes nothing.
func PlanContainerd(install bool, o ContainerdOptions) (Plan, error) {
	if !filepath.IsAbs(o.Config) || o.DropIn != "" && !filepath.IsAbs(o.DropIn) {
		return Plan{}, fmt.Errorf("containerd config paths must be absolute: %q, %q", o.Config, o.DropIn)
	}
	dropPath := o.dropIn()
	cur := containerdFiles{others: map[string][]byte{}}
	var err error
	if cur.main, err = readOptional(o.Config); err != nil {
		return Plan{}, err
	}
	if cur.dropIn, err = readOptional(dropPath); err != nil {
		return Plan{}, err
	}
	p := Plan{Daemon: "containerd"}
	if cur.main != nil {
		// The other files containerd imports, in case one registers the
		// runtime by hand (imports of imports are not followed).
		main, err := parseContainerd(o.Config, cur.main)
		if err != nil {
			return Plan{}, err
		}
		entries, err := main.imports()
		if err != nil {
			return Plan{}, err
		}
		for _, e := range entries {
			paths, err := ResolveImport(o.Config, e)
			if err != nil {
				return Plan{}, err
			}
			for _, path := range paths {
				if path == dropPath || path == o.Config {
					continue
				}
				b, err := readOptional(path)
				if err != nil {
					return Plan{}, err
				}
				if b == nil {
					p.Notes = append(p.Notes, fmt.Sprintf("warning: %s imports %s, which does not exist: containerd does not start with a missing import", o.Config, path))
					continue
				}
				cur.others[path] = b
			}
		}
	}
	var next containerdFiles
	var notes []string
	if install {
		next, notes, err = installContainerd(cur, o)
	} else {
		next, notes, err = uninstallContainerd(cur, o)
	}
	if err != nil {
		return Plan{}, err
	}
	p.Notes = append(p.Notes, notes...)
	mainChange := Change{Path: o.Config, Old: cur.main, New: next.main}
	dropChange := Change{Path: dropPath, Old: cur.dropIn, New: next.dropIn, NoBackup: pristineDropIn(cur.dropIn, o.Config)}
	order := []Change{dropChange, mainChange}
	if !install {
		order = []Change{mainChange, dropChange}
	}
	for _, c := range order {
		if changed(c) {
			p.Changes = append(p.Changes, c)
		}
	}
	if len(p.Changes) > 0 {
		p.Reload = "restart containerd to read it: systemctl restart containerd (running containers keep running: each has its own shim process)"
	}
	return p, nil
}

// ResolveImport is containerd's resolveImports for one entry of the
// imports of the config file mainPath: a relative path is relative to the
// config's directory, and only an entry with a "*" is a glob.
func ResolveImport(mainPath, entry string) ([]string, error) {
	p := filepath.Clean(entry)
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(mainPath), p)
	}
	if !strings.Contains(p, "*") {
		return []string{p}, nil
	}
	m, err := filepath.Glob(p)
	if err != nil {
		return nil, fmt.Errorf("%s: imports %q: %w", mainPath, entry, err)
	}
	return m, nil
}

// pristineDropIn reports whether text is a drop-in exactly as install
// writes it.
func pristineDropIn(text []byte, mainPath string) bool {
	if !bytes.HasPrefix(text, []byte(dropInMarker)) {
		return false
	}
	d, err := parseContainerd("", text)
	if err != nil {
		return false
	}
	entry, ok, _ := d.registration()
	if !ok {
		return false
	}
	shim, _ := entry["runtime_path"].(string)
	want, err := dropInText(d.version, mainPath, shim)
	return err == nil && want == string(text)
}

func changed(c Change) bool {
	return (c.Old == nil) != (c.New == nil) || !bytes.Equal(c.Old, c.New)
}

// PlanDocker reads daemon.json and plans install (or, with install false,
// uninstall). It writes nothing.
func PlanDocker(install bool, o DockerOptions) (Plan, error) {
	cur, err := readOptional(o.Config)
	if err != nil {
		return Plan{}, err
	}
	var next []byte
	var notes []string
	if install {
		next, notes, err = installDocker(cur, o)
	} else {
		next, notes, err = uninstallDocker(cur, o)
	}
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Daemon: "dockerd", Notes: notes}
	if c := (Change{Path: o.Config, Old: cur, New: next}); changed(c) {
		p.Changes = append(p.Changes, c)
		p.Reload = "reload dockerd to read it: systemctl reload docker (dockerd re-reads its runtimes on SIGHUP; a restart works too)"
		var after map[string]any
		if err := json.Unmarshal(next, &after); err == nil && !install && after["runtimes"] == nil {
			// A reload keeps the runtimes when the key is gone.
			p.Reload = "restart dockerd to drop it: systemctl restart docker (a reload keeps the runtimes when daemon.json no longer names any)"
		}
	}
	return p, nil
}

// Apply writes the plan's changes in order: each existing file is backed
// up beside itself first (unless NoBackup), checked to be still as it was
// read, and replaced atomically with its mode and owner kept. It returns
// one line per file written, removed or backed up; on an error, the
// changes before it stay applied and the lines say which.
func (p Plan) Apply(now time.Time) ([]string, error) {
	stamp := now.UTC().Format("20060102T150405Z")
	var done []string
	for _, c := range p.Changes {
		lines, err := apply(c, stamp)
		done = append(done, lines...)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func apply(c Change, stamp string) ([]string, error) {
	var done []string
	path := c.Path
	mode := fs.FileMode(0o644)
	uid, gid := -1, -1
	if c.Old != nil {
		// Write through a symlink to the file it names, as an editor
		// would, instead of replacing the link.
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			return nil, err
		}
		path = real
		st, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		mode = st.Mode().Perm()
		if s, ok := st.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(s.Uid), int(s.Gid)
		}
		now, err := readOptional(path)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(now, c.Old) {
			return nil, fmt.Errorf("%s changed since it was read: not written; run the command again", c.Path)
		}
		if !c.NoBackup {
			backup, err := backUp(path, stamp, c.Old, mode, uid, gid)
			if err != nil {
				return nil, fmt.Errorf("back up %s: %w", path, err)
			}
			done = append(done, fmt.Sprintf("backed up %s to %s", c.Path, backup))
		}
	} else if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("%s appeared since it was read: not written; run the command again", c.Path)
	}
	if c.New == nil {
		if err := os.Remove(path); err != nil {
			return done, err
		}
		return append(done, "removed "+c.Path), nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return done, err
	}
	if err := replaceFile(path, c.New, mode, uid, gid); err != nil {
		return done, err
	}
	return append(done, "wrote "+c.Path), nil
}

// backUp writes data to path.gondolin-STAMP.bak, or, when a backup of
// the same second exists, path.gondolin-STAMP-N.bak.
func backUp(path, stamp string, data []byte, mode fs.FileMode, uid, gid int) (string, error) {
	for n := 1; n < 100; n++ {
		name := path + ".gondolin-" + stamp + ".bak"
		if n > 1 {
			name = fmt.Sprintf("%s.gondolin-%s-%d.bak", path, stamp, n)
		}
		err := writeNew(name, data, mode, uid, gid)
		if !errors.Is(err, fs.ErrExist) {
			return name, err
		}
	}
	return "", fmt.Errorf("%s.gondolin-%s-*.bak: too many backups in one second", path, stamp)
}

// writeNew creates path, which must not exist, with data.
func writeNew(path string, data []byte, mode fs.FileMode, uid, gid int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	return finish(f, data, mode, uid, gid)
}

// replaceFile writes data to a temporary file beside path and renames it
// over path, so that a reader sees the old file or the new one.
func replaceFile(path string, data []byte, mode fs.FileMode, uid, gid int) error {
	dir := filepath.Dir(path)
	// A leading dot and a suffix after the name keep the temporary file
	// out of globs such as conf.d/*.toml.
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err := finish(f, data, mode, uid, gid); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func finish(f *os.File, data []byte, mode fs.FileMode, uid, gid int) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil && uid >= 0 && (uid != os.Geteuid() || gid != os.Getegid()) {
		err = f.Chown(uid, gid)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// CheckShim checks a --shim path: absolute, a regular file, executable.
func CheckShim(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("--shim %q: must be an absolute path (containerd and dockerd run it from their own working directory)", path)
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("--shim: %w", err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("--shim %s: not an executable file", path)
	}
	return nil
}

// ShimNote says, when the shim is not on this PATH, that containerd will
// not find it on its own either (unless its PATH differs).
func ShimNote() string {
	if _, err := exec.LookPath(ShimBinary); err == nil {
		return ""
	}
	return fmt.Sprintf("note: %s is not on this PATH; containerd looks for it on its own PATH: install it (make install puts it in /usr/local/bin) or name it with --shim", ShimBinary)
}
