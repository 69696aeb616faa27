package hostinstall

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// ContainerdOptions say where containerd's configuration lives and how the
// runtime is registered in it.
type ContainerdOptions struct {
	// Config is containerd's main config file (absolute).
	Config string
	// DropIn is the file holding the runtime entry, imported by Config
	// (absolute); "" means conf.d/gondolin.toml beside Config.
	DropIn string
	// InPlace puts the entry into Config itself instead of a drop-in.
	InPlace bool
	// Shim is the shim binary's absolute path, written as the entry's
	// runtime_path; "" leaves containerd to find ShimBinary on its PATH.
	Shim string
}

func (o ContainerdOptions) dropIn() string {
	if o.DropIn != "" {
		return o.DropIn
	}
	return filepath.Join(filepath.Dir(o.Config), "conf.d", "gondolin.toml")
}

// containerdFiles is what the containerd edits read and write; a nil
// slice is a file that does not exist.
type containerdFiles struct {
	main   []byte
	dropIn []byte
	// others are the other files main imports, by path, read only to
	// find a registration made there by hand.
	others map[string][]byte
}

// Markers of what install wrote. Uninstall removes only text carrying
// them.
const (
	dropInMarker = "# Written by gondolin install;"
	mainMarker   = "# Written by gondolin install: containerd had no config file, and its defaults apply to all this file does not set.\n"
	importMarker = "# added by gondolin install"
	blockBegin   = "# gondolin install: begin (gondolin uninstall --containerd removes this block)"
	blockEnd     = "# gondolin install: end"
)

// newConfigVersion is the config version of a file install creates:
// containerd 2's, which gondolin requires.
const newConfigVersion = 3

// containerdDoc is a decoded containerd config file.
type containerdDoc struct {
	path    string
	data    map[string]any
	version int
}

func parseContainerd(path string, text []byte) (*containerdDoc, error) {
	data, err := decodeTOML(text)
	if err != nil {
		return nil, fmt.Errorf("%s is not valid TOML (containerd would not start with it either): %w", path, err)
	}
	d := &containerdDoc{path: path, data: data, version: 1}
	if raw, ok := data["version"]; ok {
		n, ok := raw.(int64)
		if !ok {
			return nil, fmt.Errorf("%s: version = %v: must be an integer", path, raw)
		}
		d.version = int(n)
	}
	if d.version < 1 || d.version > 3 {
		return nil, fmt.Errorf("%s: version = %d: gondolin install knows containerd config versions 1 (which containerd 2 migrates), 2 and 3", path, d.version)
	}
	return d, nil
}

// criPlugins are the names the CRI runtime settings live under in a
// config of this version: containerd 2 split the CRI plugin, and version
// 3 configs name the runtime part; version 1 used the short name.
func (d *containerdDoc) criPlugins() []string {
	if d.version == 3 {
		return []string{"io.containerd.cri.v1.runtime"}
	}
	return []string{"io.containerd.grpc.v1.cri", "cri"}
}

func lookup(m map[string]any, keys ...string) (any, bool) {
	var v any = m
	for _, k := range keys {
		t, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = t[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// registration is the gondolin runtime entry the file holds, if any.
func (d *containerdDoc) registration() (map[string]any, bool, error) {
	for _, p := range d.criPlugins() {
		v, ok := lookup(d.data, "plugins", p, "containerd", "runtimes", RuntimeName)
		if !ok {
			continue
		}
		entry, ok := v.(map[string]any)
		if !ok {
			return nil, false, fmt.Errorf("%s: plugins.%q.containerd.runtimes.%s is not a table", d.path, p, RuntimeName)
		}
		return entry, true, nil
	}
	return nil, false, nil
}

// checkRegistration accepts an existing entry that registers what install
// would, and refuses one that registers something else under the name.
func (d *containerdDoc) checkRegistration(entry map[string]any, shim string) error {
	if rt, _ := entry["runtime_type"].(string); rt != RuntimeType {
		return fmt.Errorf("%s already registers a runtime named %s with runtime_type = %q, not %q: not changed; remove or rename that entry first",
			d.path, RuntimeName, entry["runtime_type"], RuntimeType)
	}
	// Without --shim, any shim path the entry names will do.
	if path, _ := entry["runtime_path"].(string); shim != "" && path != shim {
		return fmt.Errorf("%s already registers the runtime %s with runtime_path = %q, and --shim asks for %q: run gondolin uninstall --containerd first to change it",
			d.path, RuntimeName, path, shim)
	}
	return nil
}

func (d *containerdDoc) defaultRuntime() string {
	for _, p := range d.criPlugins() {
		if v, ok := lookup(d.data, "plugins", p, "containerd", "default_runtime_name"); ok {
			s, _ := v.(string)
			return s
		}
	}
	return ""
}

func (d *containerdDoc) criDisabled() bool {
	v, _ := d.data["disabled_plugins"].([]any)
	for _, p := range v {
		switch p {
		case "cri", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime":
			return true
		}
	}
	return false
}

func (d *containerdDoc) imports() ([]string, error) {
	raw, ok := d.data["imports"]
	if !ok {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf("%s: imports = %v: must be a list of paths", d.path, raw)
	}
	out := make([]string, 0, len(list))
	for _, v := range list {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%s: imports holds %v: must be a list of paths", d.path, v)
		}
		out = append(out, s)
	}
	return out, nil
}

// importCovers reports whether containerd, reading the config file
// mainPath, imports target through entry: relative paths are relative to
// the config's directory, and only a "*" makes a glob
// (containerd's resolveImports).
func importCovers(mainPath, entry, target string) bool {
	p := filepath.Clean(entry)
	if !filepath.IsAbs(p) {
		p = filepath.Join(filepath.Dir(mainPath), p)
	}
	if strings.Contains(p, "*") {
		ok, err := filepath.Match(p, target)
		return err == nil && ok
	}
	return p == filepath.Clean(target)
}

func (d *containerdDoc) importsCover(target string) (bool, error) {
	list, err := d.imports()
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(list, func(e string) bool { return importCovers(d.path, e, target) }), nil
}

// runtimeHeader is the TOML table of the runtime entry in a config of the
// given version.
func runtimeHeader(version int) string {
	plugin := "io.containerd.cri.v1.runtime"
	if version < 3 {
		plugin = "io.containerd.grpc.v1.cri"
	}
	return fmt.Sprintf("[plugins.%q.containerd.runtimes.%s]", plugin, RuntimeName)
}

// runtimeEntry is the table install writes.
func runtimeEntry(version int, shim string) (string, error) {
	var b strings.Builder
	b.WriteString(runtimeHeader(version) + "\n")
	fmt.Fprintf(&b, "  runtime_type = %q\n", RuntimeType)
	if shim != "" {
		s, err := tomlString(shim)
		if err != nil {
			return "", fmt.Errorf("--shim: %w", err)
		}
		b.WriteString("  runtime_path = " + s + "\n")
	}
	// Without these the CRI drops the io.gondolin.* annotations of pods
	// and containers before the shim sees them.
	b.WriteString("  # CRI passes only the annotations listed here on to the runtime.\n")
	b.WriteString("  pod_annotations = [\"io.gondolin.*\"]\n")
	b.WriteString("  container_annotations = [\"io.gondolin.*\"]\n")
	return b.String(), nil
}

func dropInText(version int, mainPath, shim string) (string, error) {
	entry, err := runtimeEntry(version, shim)
	if err != nil {
		return "", err
	}
	return dropInMarker + " gondolin uninstall --containerd removes it.\n" +
		"# Registers the gondolin runtime (" + RuntimeType + ") with containerd's CRI\n" +
		"# plugin (Kubernetes, crictl); imported by " + mainPath + ".\n" +
		"# ctr and Docker name the runtime themselves and do not need it.\n" +
		fmt.Sprintf("version = %d\n\n", version) + entry, nil
}

func blockText(version int, shim string) (string, error) {
	entry, err := runtimeEntry(version, shim)
	if err != nil {
		return "", err
	}
	return "\n" + blockBegin + "\n" + entry + blockEnd + "\n", nil
}

// installContainerd registers the runtime: a drop-in imported by the main
// config, or (InPlace, or when the main config's imports cannot be
// edited) an entry appended to the main config. notes say what it does or
// why it does nothing.
func installContainerd(cur containerdFiles, o ContainerdOptions) (next containerdFiles, notes []string, err error) {
	next = cur
	dropPath := o.dropIn()
	var main, drop *containerdDoc
	if cur.main != nil {
		if main, err = parseContainerd(o.Config, cur.main); err != nil {
			return cur, nil, err
		}
	}
	if cur.dropIn != nil {
		if drop, err = parseContainerd(dropPath, cur.dropIn); err != nil {
			return cur, nil, err
		}
	}
	covered := false
	if main != nil {
		if covered, err = main.importsCover(dropPath); err != nil {
			return cur, nil, err
		}
	}

	// Registered already, by install or by hand?
	active := []*containerdDoc{}
	if main != nil {
		active = append(active, main)
	}
	for _, path := range sortedKeys(cur.others) {
		d, err := parseContainerd(path, cur.others[path])
		if err != nil {
			return cur, nil, err
		}
		active = append(active, d)
	}
	if drop != nil && covered {
		active = append(active, drop)
	}
	for _, d := range active {
		entry, ok, err := d.registration()
		if err != nil {
			return cur, nil, err
		}
		if !ok {
			continue
		}
		if err := d.checkRegistration(entry, o.Shim); err != nil {
			return cur, nil, err
		}
		return cur, []string{fmt.Sprintf("already installed: %s registers the runtime %s (%s)", d.path, RuntimeName, RuntimeType)}, nil
	}
	if main != nil && main.criDisabled() {
		notes = append(notes, fmt.Sprintf("%s disables containerd's CRI plugin (disabled_plugins): the entry only matters to CRI clients (Kubernetes, crictl) once it is enabled; ctr and Docker name the runtime themselves", o.Config))
	}

	if o.InPlace {
		return appendBlock(cur, o, main, notes)
	}

	// The drop-in, and the import that makes containerd read it.
	var newMain []byte
	if main != nil && !covered {
		if newMain, err = addImport(cur.main, main, dropPath); err != nil {
			if errors.Is(err, errVerify) {
				return cur, nil, err
			}
			// The main file cannot take an import: put the entry in it.
			notes = append(notes, fmt.Sprintf("cannot add an import to %s (%v): editing it in place instead", o.Config, err))
			return appendBlock(cur, o, main, notes)
		}
	}
	version := newConfigVersion
	if main != nil && main.version == 2 {
		// containerd migrates the merged config by the version it ends
		// with, so the drop-in's must be the main file's.
		version = 2
	}
	keep := false
	if drop != nil {
		if !bytes.HasPrefix(cur.dropIn, []byte(dropInMarker)) {
			return cur, nil, fmt.Errorf("%s exists and was not written by gondolin install: not changed; choose another drop-in path with --containerd-dropin", dropPath)
		}
		entry, ok, err := drop.registration()
		if err != nil {
			return cur, nil, err
		}
		// Install's own file, not imported yet: kept if it says what
		// this install would, else written again.
		keep = ok && drop.version == version && drop.checkRegistration(entry, o.Shim) == nil
	}
	if !keep {
		text, err := dropInText(version, o.Config, o.Shim)
		if err != nil {
			return cur, nil, err
		}
		next.dropIn = []byte(text)
		notes = append(notes, fmt.Sprintf("%s registers the runtime %s with containerd's CRI plugin", dropPath, RuntimeName))
	}
	switch {
	case covered:
		notes = append(notes, fmt.Sprintf("%s imports it already", o.Config))
	case main == nil:
		imp, err := importLine(dropPath)
		if err != nil {
			return cur, nil, err
		}
		next.main = []byte(mainMarker + fmt.Sprintf("version = %d\n", newConfigVersion) + imp)
		notes = append(notes, fmt.Sprintf("%s does not exist: it is created, importing only the drop-in (containerd's defaults apply to everything else)", o.Config))
	default:
		next.main = newMain
		notes = append(notes, fmt.Sprintf("%s imports it", o.Config))
	}
	return next, notes, nil
}

var errVerify = errors.New("the edit did not check out")

// appendBlock puts the entry at the end of the main config, between
// markers, leaving every other byte as it was.
func appendBlock(cur containerdFiles, o ContainerdOptions, main *containerdDoc, notes []string) (containerdFiles, []string, error) {
	next := cur
	if main == nil {
		block, err := blockText(newConfigVersion, o.Shim)
		if err != nil {
			return cur, nil, err
		}
		next.main = []byte(mainMarker + fmt.Sprintf("version = %d\n", newConfigVersion) + block)
		return next, append(notes, fmt.Sprintf("%s does not exist: it is created with only the runtime entry (containerd's defaults apply to everything else)", o.Config)), nil
	}
	if main.version == 1 {
		return cur, nil, fmt.Errorf("%s is a version 1 config (no version key): gondolin install does not edit one in place; use the drop-in (without --containerd-in-place), or migrate it first with `containerd config migrate`", o.Config)
	}
	block, err := blockText(main.version, o.Shim)
	if err != nil {
		return cur, nil, err
	}
	text := cur.main
	if len(text) > 0 && text[len(text)-1] != '\n' {
		text = append(slices.Clip(text), '\n')
	}
	newMain := append(slices.Clip(text), block...)
	if err := verifyAdded(o.Config, cur.main, newMain, main.version, o.Shim); err != nil {
		return cur, nil, err
	}
	next.main = newMain
	return next, append(notes, fmt.Sprintf("%s gets the runtime entry at its end, between %q marker comments (comments and all other content stay as they are)", o.Config, "gondolin install")), nil
}

// importLine is the imports key install adds to a config without one.
func importLine(path string) (string, error) {
	s, err := tomlString(path)
	if err != nil {
		return "", err
	}
	return "imports = [" + s + "] " + importMarker + "\n", nil
}

// addImport adds path to the main config's top-level imports, creating
// the key if there is none.
func addImport(text []byte, main *containerdDoc, path string) ([]byte, error) {
	top, err := scanTop(text)
	if err != nil {
		return nil, err
	}
	list, err := main.imports()
	if err != nil {
		return nil, err
	}
	q, err := tomlString(path)
	if err != nil {
		return nil, err
	}
	var out []byte
	if k, ok := top.key("imports"); ok {
		elems, err := arrayElements(text, k.value.start)
		if err != nil {
			return nil, err
		}
		if len(elems) != len(list) {
			return nil, fmt.Errorf("found %d imports in the text and %d in the decoded file", len(elems), len(list))
		}
		at, ins := k.value.end-1, q // before "]"
		if len(elems) > 0 {
			at, ins = elems[len(elems)-1].end, ", "+q
		}
		out = splice(text, at, at, ins)
	} else {
		if _, ok := main.data["imports"]; ok {
			return nil, fmt.Errorf("imports is set but not as a top-level key line")
		}
		line, err := importLine(path)
		if err != nil {
			return nil, err
		}
		at := top.headerAt
		if k, ok := top.key("version"); ok {
			at = k.line.end
		} else if len(top.keys) > 0 {
			at = top.keys[len(top.keys)-1].line.end
		}
		if at > 0 && text[at-1] != '\n' {
			line = "\n" + line
		}
		out = splice(text, at, at, line)
	}
	if err := verifyImportAdded(main.path, text, out, path); err != nil {
		return nil, err
	}
	return out, nil
}

func splice(text []byte, start, end int, insert string) []byte {
	out := make([]byte, 0, len(text)-(end-start)+len(insert))
	out = append(out, text[:start]...)
	out = append(out, insert...)
	return append(out, text[end:]...)
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// verifyImportAdded checks that after differs from before only in that
// its imports cover path.
func verifyImportAdded(mainPath string, before, after []byte, path string) error {
	b, a, err := decodePair(before, after)
	if err != nil {
		return err
	}
	d := &containerdDoc{path: mainPath, data: a}
	if ok, err := d.importsCover(path); err != nil || !ok {
		return fmt.Errorf("%w: %s does not import %s after the edit", errVerify, mainPath, path)
	}
	delete(a, "imports")
	delete(b, "imports")
	if !reflect.DeepEqual(a, b) {
		return fmt.Errorf("%w: the edit of %s changed more than its imports", errVerify, mainPath)
	}
	return nil
}

// verifyAdded checks that after differs from before only by the runtime
// entry.
func verifyAdded(mainPath string, before, after []byte, version int, shim string) error {
	b, a, err := decodePair(before, after)
	if err != nil {
		return err
	}
	d := &containerdDoc{path: mainPath, data: a, version: version}
	entry, ok, err := d.registration()
	if err != nil || !ok || d.checkRegistration(entry, shim) != nil {
		return fmt.Errorf("%w: %s does not register the runtime after the edit", errVerify, mainPath)
	}
	if !reflect.DeepEqual(withoutEntry(a), withoutEntry(b)) {
		return fmt.Errorf("%w: the edit of %s changed more than the runtime entry", errVerify, mainPath)
	}
	return nil
}

func decodePair(before, after []byte) (map[string]any, map[string]any, error) {
	b, err := decodeTOML(before)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errVerify, err)
	}
	a, err := decodeTOML(after)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: the edited file is not valid TOML: %v", errVerify, err)
	}
	return b, a, nil
}

// decodeTOML decodes a config with the parser containerd uses
// (pelletier/go-toml/v2), so that what it accepts containerd accepts:
// BurntSushi/toml, for one, lets a [table] header extend an inline table,
// which containerd refuses.
func decodeTOML(text []byte) (map[string]any, error) {
	var data map[string]any
	if err := toml.Unmarshal(text, &data); err != nil {
		var derr *toml.DecodeError
		if errors.As(err, &derr) {
			row, col := derr.Position()
			return nil, fmt.Errorf("line %d column %d: %v", row, col, err)
		}
		return nil, err
	}
	return data, nil
}

// withoutEntry is m without any gondolin runtime entry and without the
// empty tables that leaves.
func withoutEntry(m map[string]any) map[string]any {
	for _, p := range []string{"io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri", "cri"} {
		if v, ok := lookup(m, "plugins", p, "containerd", "runtimes"); ok {
			if rt, ok := v.(map[string]any); ok {
				delete(rt, RuntimeName)
			}
		}
	}
	pruneEmpty(m)
	return m
}

func pruneEmpty(m map[string]any) {
	for k, v := range m {
		if t, ok := v.(map[string]any); ok {
			pruneEmpty(t)
			if len(t) == 0 {
				delete(m, k)
			}
		}
	}
}

// uninstallContainerd removes what installContainerd added: its drop-in,
// the import of it, the block it appended, and a main config it created.
// It refuses, changing nothing, when the runtime stays registered by hand
// elsewhere or is containerd's default runtime.
func uninstallContainerd(cur containerdFiles, o ContainerdOptions) (next containerdFiles, notes []string, err error) {
	next = cur
	dropPath := o.dropIn()
	dropOurs := cur.dropIn != nil && bytes.HasPrefix(cur.dropIn, []byte(dropInMarker))

	var active []*containerdDoc
	if cur.main != nil {
		text, removed, err := removeBlock(o.Config, cur.main)
		if err != nil {
			return cur, nil, err
		}
		if removed {
			notes = append(notes, fmt.Sprintf("%s: the runtime entry gondolin install appended is removed", o.Config))
		}
		if cur.dropIn == nil || dropOurs {
			var n int
			if text, n, err = removeImport(o.Config, text, dropPath); err != nil {
				return cur, nil, err
			}
			if n > 0 {
				notes = append(notes, fmt.Sprintf("%s: the import of %s is removed", o.Config, dropPath))
			}
		}
		after, err := parseContainerd(o.Config, text)
		if err != nil {
			return cur, nil, err
		}
		active = append(active, after)
		if !bytes.Equal(text, cur.main) {
			next.main = text
			if string(text) == mainMarker+fmt.Sprintf("version = %d\n", newConfigVersion) {
				next.main = nil
				notes = append(notes, fmt.Sprintf("%s is removed: gondolin install created it", o.Config))
			}
		}
	}
	for _, path := range sortedKeys(cur.others) {
		d, err := parseContainerd(path, cur.others[path])
		if err != nil {
			return cur, nil, err
		}
		active = append(active, d)
	}
	if cur.dropIn != nil && !dropOurs && cur.main != nil {
		d, err := parseContainerd(dropPath, cur.dropIn)
		if err != nil {
			return cur, nil, err
		}
		if ok, _ := active[0].importsCover(dropPath); ok {
			active = append(active, d)
		}
	}
	for _, d := range active {
		if _, ok, err := d.registration(); err != nil {
			return cur, nil, err
		} else if ok {
			return cur, nil, fmt.Errorf("%s registers the runtime %s, and gondolin install did not write that entry: nothing changed; remove it there by hand", d.path, RuntimeName)
		}
		if d.defaultRuntime() == RuntimeName {
			return cur, nil, fmt.Errorf("%s makes %s the CRI's default_runtime_name: containerd's CRI could not run a container without it; nothing changed: set another default first", d.path, RuntimeName)
		}
	}
	if dropOurs {
		next.dropIn = nil
		notes = append(notes, fmt.Sprintf("%s is removed", dropPath))
	}
	if bytes.Equal(next.main, cur.main) && (next.main == nil) == (cur.main == nil) && !dropOurs {
		return cur, []string{"not installed: nothing of gondolin install's is in " + o.Config + " or " + dropPath}, nil
	}
	return next, notes, nil
}

// removeBlock removes the block appendBlock added, with the blank line
// before it.
func removeBlock(path string, text []byte) ([]byte, bool, error) {
	begin, end := -1, -1
	for off := 0; off < len(text); {
		lineEnd := bytes.IndexByte(text[off:], '\n')
		next := len(text)
		if lineEnd >= 0 {
			next = off + lineEnd + 1
		}
		switch strings.TrimSpace(string(text[off:next])) {
		case blockBegin:
			if begin >= 0 {
				return nil, false, fmt.Errorf("%s holds two gondolin install blocks: remove them by hand", path)
			}
			begin = off
		case blockEnd:
			if begin >= 0 && end < 0 {
				end = next
			}
		}
		off = next
	}
	if begin < 0 {
		return text, false, nil
	}
	if end < 0 {
		return nil, false, fmt.Errorf("%s: the gondolin install block has no end marker %q: remove it by hand", path, blockEnd)
	}
	if begin >= 2 && text[begin-1] == '\n' && text[begin-2] == '\n' {
		begin--
	}
	return splice(text, begin, end, ""), true, nil
}

// removeImport removes the imports entries naming path (not globs that
// cover it), and the whole imports line if install added it and nothing
// else is left in it. It returns how many entries it removed.
func removeImport(mainPath string, text []byte, path string) ([]byte, int, error) {
	removed := 0
	for {
		top, err := scanTop(text)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", mainPath, err)
		}
		k, ok := top.key("imports")
		if !ok {
			return text, removed, nil
		}
		elems, err := arrayElements(text, k.value.start)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: imports: %w", mainPath, err)
		}
		idx := slices.IndexFunc(elems, func(e span) bool {
			var v struct{ X string }
			if err := toml.Unmarshal([]byte("X = "+string(text[e.start:e.end])), &v); err != nil {
				return false
			}
			return !strings.Contains(v.X, "*") && importCovers(mainPath, v.X, path)
		})
		if idx < 0 {
			return text, removed, nil
		}
		before := text
		switch n := len(elems); {
		case n == 1 && strings.Contains(string(text[k.line.start:k.line.end]), importMarker):
			text = splice(text, k.line.start, k.line.end, "")
		case idx < n-1:
			text = splice(text, elems[idx].start, elems[idx+1].start, "")
		case idx > 0:
			text = splice(text, elems[idx-1].end, elems[idx].end, "")
		default:
			end := elems[idx].end
			s := &tomlScanner{doc: text, i: end}
			s.skipSpace()
			if s.at(",") {
				end = s.i + 1
			}
			text = splice(text, elems[idx].start, end, "")
		}
		b, a, err := decodePair(before, text)
		if err != nil {
			return nil, 0, err
		}
		delete(a, "imports")
		delete(b, "imports")
		if !reflect.DeepEqual(a, b) {
			return nil, 0, fmt.Errorf("%w: removing the import from %s changed more than its imports", errVerify, mainPath)
		}
		removed++
	}
}
