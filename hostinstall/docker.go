package hostinstall

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
)

// DockerOptions say where Docker's daemon.json is and how the runtime is
// registered in it.
type DockerOptions struct {
	// Config is daemon.json's path.
	Config string
	// Shim is the shim binary's absolute path, written as runtimeType
	// (dockerd accepts a path there); "" writes RuntimeType.
	Shim string
}

func (o DockerOptions) runtimeType() string {
	if o.Shim != "" {
		return o.Shim
	}
	return RuntimeType
}

// Like the TOML edits, the daemon.json edits insert and cut text, so that
// the file keeps its order and layout; the result is checked by decoding.

// jsonMember is one member of a JSON object.
type jsonMember struct {
	key   string
	start int // the key's opening quote
	value span
}

// jsonObject is an object's members and the offsets of its braces.
type jsonObject struct {
	open, close int
	members     []jsonMember
}

func (o jsonObject) member(key string) (jsonMember, int, bool) {
	for i, m := range o.members {
		if m.key == key {
			return m, i, true
		}
	}
	return jsonMember{}, -1, false
}

// scanObject scans the object starting at doc[at], which must be valid
// JSON (checked with json.Valid first). Duplicate keys are refused:
// dockerd would take one of them silently.
func scanObject(doc []byte, at int) (jsonObject, error) {
	if doc[at] != '{' {
		return jsonObject{}, fmt.Errorf("expected an object")
	}
	obj := jsonObject{open: at}
	i := at + 1
	seen := map[string]bool{}
	for {
		i = skipJSONSpace(doc, i)
		switch doc[i] {
		case '}':
			obj.close = i
			return obj, nil
		case ',':
			i++
			continue
		}
		start := i
		end := skipJSONValue(doc, i)
		var key string
		if err := json.Unmarshal(doc[start:end], &key); err != nil {
			return jsonObject{}, err
		}
		if seen[key] {
			return jsonObject{}, fmt.Errorf("key %q appears twice", key)
		}
		seen[key] = true
		i = skipJSONSpace(doc, end)
		i = skipJSONSpace(doc, i+1) // ':'
		vEnd := skipJSONValue(doc, i)
		obj.members = append(obj.members, jsonMember{key: key, start: start, value: span{i, vEnd}})
		i = vEnd
	}
}

func skipJSONSpace(doc []byte, i int) int {
	for i < len(doc) && strings.IndexByte(" \t\r\n", doc[i]) >= 0 {
		i++
	}
	return i
}

// skipJSONValue returns the end of the valid JSON value at doc[i].
func skipJSONValue(doc []byte, i int) int {
	switch doc[i] {
	case '"':
		for i++; doc[i] != '"'; i++ {
			if doc[i] == '\\' {
				i++
			}
		}
		return i + 1
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch doc[i] {
			case '"':
				i = skipJSONValue(doc, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	}
	for i < len(doc) && strings.IndexByte(" \t\r\n,]}", doc[i]) < 0 {
		i++
	}
	return i
}

// indentOf is the blank space that starts the line holding doc[at].
func indentOf(doc []byte, at int) string {
	lineStart := bytes.LastIndexByte(doc[:at], '\n') + 1
	end := lineStart
	for end < at && (doc[end] == ' ' || doc[end] == '\t') {
		end++
	}
	return string(doc[lineStart:end])
}

// insertMember adds "key": value as the last member of obj. A one-line
// object gets the compact value on the same line; a multi-line one gets
// the pretty value on a line of its own, indented like its siblings.
func insertMember(doc []byte, obj jsonObject, key, compact, pretty string) []byte {
	k, _ := json.Marshal(key)
	if bytes.IndexByte(doc[obj.open:obj.close], '\n') < 0 {
		member := string(k) + ": " + compact
		if len(obj.members) == 0 {
			return splice(doc, obj.open+1, obj.close, member)
		}
		last := obj.members[len(obj.members)-1]
		return splice(doc, last.value.end, last.value.end, ", "+member)
	}
	outer := indentOf(doc, obj.open)
	inner := outer + "  "
	if len(obj.members) > 0 {
		inner = indentOf(doc, obj.members[0].start)
	}
	member := string(k) + ": " + strings.ReplaceAll(pretty, "\n", "\n"+inner)
	if len(obj.members) == 0 {
		return splice(doc, obj.open+1, obj.close, "\n"+inner+member+"\n"+outer)
	}
	last := obj.members[len(obj.members)-1]
	return splice(doc, last.value.end, last.value.end, ",\n"+inner+member)
}

// removeMember cuts obj's member i with the comma and space that separate
// it from its neighbours, undoing insertMember.
func removeMember(doc []byte, obj jsonObject, i int) []byte {
	n := len(obj.members)
	switch {
	case n == 1:
		return splice(doc, obj.open+1, obj.close, "")
	case i < n-1:
		return splice(doc, obj.members[i].start, obj.members[i+1].start, "")
	default:
		return splice(doc, obj.members[i-1].value.end, obj.members[i].value.end, "")
	}
}

// dockerDoc is daemon.json, scanned.
type dockerDoc struct {
	text     []byte
	top      jsonObject
	runtimes *jsonObject // nil without a runtimes key
	// entry is runtimes.gondolin, decoded, if present.
	entry map[string]any
}

func parseDocker(path string, text []byte) (*dockerDoc, error) {
	body := bytes.TrimSpace(text)
	if !json.Valid(body) {
		var v any
		err := json.Unmarshal(body, &v)
		return nil, fmt.Errorf("%s is not valid JSON (dockerd would not start with it either): %v", path, err)
	}
	if len(body) == 0 || body[0] != '{' {
		return nil, fmt.Errorf("%s: must hold a JSON object", path)
	}
	at := bytes.IndexByte(text, '{')
	top, err := scanObject(text, at)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	d := &dockerDoc{text: text, top: top}
	m, _, ok := top.member("runtimes")
	if !ok {
		return d, nil
	}
	if text[m.value.start] != '{' {
		return nil, fmt.Errorf("%s: runtimes must be an object", path)
	}
	rt, err := scanObject(text, m.value.start)
	if err != nil {
		return nil, fmt.Errorf("%s: runtimes: %v", path, err)
	}
	d.runtimes = &rt
	if e, _, ok := rt.member(RuntimeName); ok {
		if err := json.Unmarshal(text[e.value.start:e.value.end], &d.entry); err != nil || d.entry == nil {
			return nil, fmt.Errorf("%s: runtimes.%s must be an object", path, RuntimeName)
		}
	}
	return d, nil
}

// ours reports whether the runtimes entry runs the gondolin shim, by name
// or by path.
func (d *dockerDoc) ours() bool {
	rt, _ := d.entry["runtimeType"].(string)
	return rt == RuntimeType || filepath.IsAbs(rt) && filepath.Base(rt) == ShimBinary
}

// installDocker adds runtimes.gondolin to daemon.json, creating the file
// if it is absent.
func installDocker(cur []byte, o DockerOptions) ([]byte, []string, error) {
	rtType, _ := json.Marshal(o.runtimeType())
	entry := `{"runtimeType": ` + string(rtType) + `}`
	if len(bytes.TrimSpace(cur)) == 0 {
		// dockerd reads an empty file as no settings, like a missing one.
		text := "{\n  \"runtimes\": {\n    \"" + RuntimeName + "\": " + entry + "\n  }\n}\n"
		return []byte(text), []string{fmt.Sprintf("%s does not exist or is empty: it is written with only the runtime %s", o.Config, RuntimeName)}, nil
	}
	d, err := parseDocker(o.Config, cur)
	if err != nil {
		return cur, nil, err
	}
	if d.entry != nil {
		// Without --shim, the shim named by its path will do.
		got, _ := d.entry["runtimeType"].(string)
		if got != o.runtimeType() && (o.Shim != "" || !d.ours()) {
			return cur, nil, fmt.Errorf("%s already has runtimes.%s with runtimeType %q, not %q: not changed; remove or rename that entry first",
				o.Config, RuntimeName, d.entry["runtimeType"], o.runtimeType())
		}
		return cur, []string{fmt.Sprintf("already installed: %s registers the runtime %s", o.Config, RuntimeName)}, nil
	}
	var next []byte
	if d.runtimes == nil {
		next = insertMember(cur, d.top, "runtimes", `{"`+RuntimeName+`": `+entry+`}`, "{\n  \""+RuntimeName+"\": "+entry+"\n}")
	} else {
		next = insertMember(cur, *d.runtimes, RuntimeName, entry, entry)
	}
	if err := verifyDocker(o.Config, cur, next, o.runtimeType()); err != nil {
		return cur, nil, err
	}
	return next, []string{fmt.Sprintf("%s gets runtimes.%s (every other key stays as it is)", o.Config, RuntimeName)}, nil
}

// uninstallDocker removes runtimes.gondolin, and runtimes if that leaves
// it empty.
func uninstallDocker(cur []byte, o DockerOptions) ([]byte, []string, error) {
	if len(bytes.TrimSpace(cur)) == 0 {
		return cur, []string{fmt.Sprintf("not installed: %s does not exist or is empty", o.Config)}, nil
	}
	d, err := parseDocker(o.Config, cur)
	if err != nil {
		return cur, nil, err
	}
	if d.entry == nil {
		return cur, []string{fmt.Sprintf("not installed: %s has no runtimes.%s", o.Config, RuntimeName)}, nil
	}
	if !d.ours() {
		return cur, nil, fmt.Errorf("%s: runtimes.%s has runtimeType %q, which is not the gondolin shim: not changed", o.Config, RuntimeName, d.entry["runtimeType"])
	}
	var top map[string]any
	if err := json.Unmarshal(cur, &top); err != nil {
		return cur, nil, err
	}
	if top["default-runtime"] == RuntimeName {
		return cur, nil, fmt.Errorf("%s sets default-runtime = %q: dockerd would not start without the runtime; nothing changed: set another default-runtime first", o.Config, RuntimeName)
	}
	_, i, _ := d.runtimes.member(RuntimeName)
	var next []byte
	if len(d.runtimes.members) == 1 {
		_, j, _ := d.top.member("runtimes")
		next = removeMember(cur, d.top, j)
	} else {
		next = removeMember(cur, *d.runtimes, i)
	}
	var before, after map[string]any
	if err := json.Unmarshal(next, &after); err != nil {
		return cur, nil, fmt.Errorf("%w: the edited %s is not valid JSON: %v", errVerify, o.Config, err)
	}
	_ = json.Unmarshal(cur, &before)
	withoutDockerEntry(before)
	if !reflect.DeepEqual(before, after) {
		return cur, nil, fmt.Errorf("%w: the edit of %s changed more than runtimes.%s", errVerify, o.Config, RuntimeName)
	}
	return next, []string{fmt.Sprintf("%s: runtimes.%s is removed", o.Config, RuntimeName)}, nil
}

func withoutDockerEntry(m map[string]any) {
	if rt, ok := m["runtimes"].(map[string]any); ok {
		delete(rt, RuntimeName)
		if len(rt) == 0 {
			delete(m, "runtimes")
		}
	}
}

// verifyDocker checks that after differs from before only by the entry.
func verifyDocker(path string, before, after []byte, rtType string) error {
	var b, a map[string]any
	if err := json.Unmarshal(after, &a); err != nil {
		return fmt.Errorf("%w: the edited %s is not valid JSON: %v", errVerify, path, err)
	}
	if err := json.Unmarshal(before, &b); err != nil {
		return err
	}
	got, _ := lookupJSON(a, "runtimes", RuntimeName, "runtimeType")
	if got != rtType {
		return fmt.Errorf("%w: %s has no runtimes.%s after the edit", errVerify, path, RuntimeName)
	}
	withoutDockerEntry(a)
	withoutDockerEntry(b)
	if !reflect.DeepEqual(a, b) {
		return fmt.Errorf("%w: the edit of %s changed more than runtimes.%s", errVerify, path, RuntimeName)
	}
	return nil
}

func lookupJSON(m map[string]any, keys ...string) (any, bool) {
	return lookup(m, keys...)
}
