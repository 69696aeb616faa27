package hostcheck

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/earendil-works/gondolin-containerd/hostinstall"
	"github.com/earendil-works/gondolin-containerd/images/imagebuild"
	"github.com/earendil-works/gondolin-containerd/policy"
)

// The checks that read files: each takes its paths, so tests give it
// files of their own.

// checkImage checks a guest image file (the kernel or the initramfs) and
// compares it with the manifest.json `make images` writes beside it.
func checkImage(name, key, path string) Item {
	it := Item{Name: name}
	st, err := os.Stat(path)
	if err != nil {
		it.Status = Fail
		it.Summary = fmt.Sprintf("%s: the VM cannot boot (set %s or guest_kernel in the runtime config, or run make images)", errText(err), key)
		return it
	}
	if !st.Mode().IsRegular() {
		it.Status, it.Summary = Fail, path+" is not a regular file: the VM cannot boot"
		return it
	}
	manifestPath := filepath.Join(filepath.Dir(path), imagebuild.ManifestFile)
	b, err := os.ReadFile(manifestPath)
	if err != nil {
		it.Status = Warn
		it.Summary = fmt.Sprintf("%s (%d bytes); no %s beside it (%s): not an image of make images, its contents are not checked", path, st.Size(), imagebuild.ManifestFile, errText(err))
		return it
	}
	m, err := imagebuild.ParseManifest(b)
	if err != nil {
		it.Status, it.Summary = Warn, fmt.Sprintf("%s: %s: %v", path, manifestPath, err)
		return it
	}
	var art *imagebuild.Artifact
	for i := range m.Outputs {
		if m.Outputs[i].Name == filepath.Base(path) {
			art = &m.Outputs[i]
		}
	}
	if art == nil {
		it.Status, it.Summary = Warn, fmt.Sprintf("%s is not listed in %s: its contents are not checked", path, manifestPath)
		return it
	}
	sum, err := fileSHA256(path)
	if err != nil {
		it.Status, it.Summary = Fail, fmt.Sprintf("%s cannot be read: %s", path, errText(err))
		return it
	}
	if sum != art.SHA256 || st.Size() != art.Size {
		it.Status = Warn
		it.Summary = fmt.Sprintf("%s differs from %s (sha256 %s, %d bytes; the manifest says %s, %d bytes): replaced or damaged? make images rebuilds it", path, manifestPath, short(sum), st.Size(), short(art.SHA256), art.Size)
		return it
	}
	it.Status = OK
	it.Summary = fmt.Sprintf("%s matches %s (sha256 %s)", path, imagebuild.ManifestFile, short(sum))
	switch art.Role {
	case imagebuild.RoleKernel:
		it.Summary += ", kernel " + m.Minimal.KernelRelease
	case imagebuild.RoleKernelStock:
		it.Summary += ", kernel " + m.KernelRelease
	}
	return it
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}

// caRenewBefore is when the shim makes a new CA (policy/ca.go: 30 days
// before the old one expires).
const caRenewBefore = 30 * 24 * time.Hour

// checkCA looks at the MITM CA the shim creates at the first container's
// network and reuses after.
func checkCA(dir string, now time.Time) Item {
	it := Item{Name: "ca"}
	certPath, keyPath := filepath.Join(dir, policy.CACertFile), filepath.Join(dir, policy.CAKeyFile)
	certPEM, err := os.ReadFile(certPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		it.Status, it.Summary = OK, "not created yet: the first container with a network creates it in "+dir
		return it
	case errors.Is(err, fs.ErrPermission):
		it.Status, it.Summary = Warn, "cannot read "+dir+" ("+errText(err)+"): run gondolin check as root to check it"
		return it
	case err != nil:
		it.Status, it.Summary = Fail, "cannot read "+certPath+": "+errText(err)
		return it
	}
	key, err := os.Stat(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		it.Status, it.Summary = OK, certPath+" has no key beside it: the next container makes a new CA"
		return it
	}
	if err != nil {
		it.Status, it.Summary = Warn, "cannot stat "+keyPath+": "+errText(err)
		return it
	}
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		it.Status, it.Summary = Fail, certPath+" is not PEM: every container with a network fails to create (remove "+dir+" to have a new CA made)"
		return it
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		it.Status, it.Summary = Fail, certPath+": "+err.Error()+": every container with a network fails to create (remove "+dir+" to have a new CA made)"
		return it
	}
	it.Status = OK
	it.Summary = fmt.Sprintf("%s: %q, valid until %s", certPath, cert.Subject.CommonName, cert.NotAfter.UTC().Format("2006-01-02"))
	if cert.NotAfter.Sub(now) <= caRenewBefore {
		it.Summary += "; it expires within 30 days, so the next container makes a new one"
	}
	if key.Mode().Perm()&0o077 != 0 {
		it.Status = Warn
		it.Summary += fmt.Sprintf("; %s has mode %04o, readable by others (the shim makes it 0600 at the next container)", keyPath, key.Mode().Perm())
	}
	return it
}

// criPlugins are where containerd's CRI runtimes live: version 3 configs
// name the runtime half of the split CRI plugin, version 2 the grpc one,
// version 1 the short name (hostinstall writes the same).
var criPlugins = []string{"io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri", "cri"}

// checkContainerd says whether containerd's CRI plugin has the runtime,
// in its main config file or a file it imports.
func checkContainerd(path string) Item {
	it := Item{Name: "containerd"}
	text, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		it.Status = Warn
		it.Summary = path + " does not exist: containerd's CRI (Kubernetes, crictl) does not know gondolin; run gondolin install --containerd (ctr and nerdctl name the runtime themselves: --runtime " + hostinstall.RuntimeType + ")"
		return it
	}
	if err != nil {
		it.Status, it.Summary = Warn, "cannot read "+errText(err)
		return it
	}
	main, err := decodeTOML(text)
	if err != nil {
		it.Status, it.Summary = Fail, path+" is not valid TOML, so containerd does not start: "+oneLine(err.Error())
		return it
	}
	files := []string{path}
	docs := map[string]map[string]any{path: main}
	imports, _ := main["imports"].([]any)
	for _, e := range imports {
		entry, ok := e.(string)
		if !ok {
			continue
		}
		matches, err := hostinstall.ResolveImport(path, entry)
		if err != nil {
			it.Status, it.Summary = Fail, oneLine(err.Error())+": containerd does not start"
			return it
		}
		for _, m := range matches {
			b, err := os.ReadFile(m)
			if err != nil {
				it.Status, it.Summary = Fail, path+" imports "+m+", which cannot be read ("+errText(err)+"): containerd does not start"
				return it
			}
			d, err := decodeTOML(b)
			if err != nil {
				it.Status, it.Summary = Fail, m+" (imported by "+path+") is not valid TOML, so containerd does not start: "+oneLine(err.Error())
				return it
			}
			files = append(files, m)
			docs[m] = d
		}
	}
	var found []string
	var dropped []string
	for _, f := range files {
		for _, name := range criRuntimes(docs[f]) {
			found = append(found, name.name+" in "+f)
			if !name.annotations {
				dropped = append(dropped, name.name)
			}
		}
	}
	if len(found) == 0 {
		it.Status = Warn
		it.Summary = "the CRI plugin (Kubernetes, crictl) does not know gondolin in " + strings.Join(files, ", ") + ": run gondolin install --containerd (ctr and nerdctl name the runtime themselves: --runtime " + hostinstall.RuntimeType + ")"
		return it
	}
	it.Status, it.Summary = OK, "registered as "+strings.Join(found, ", ")+" (restart containerd after a change)"
	if len(dropped) > 0 {
		it.Status = Warn
		it.Summary += "; " + strings.Join(dropped, ", ") + " lacks pod_annotations and container_annotations = [\"io.gondolin.*\"], so the CRI drops pods' io.gondolin.* annotations"
	}
	return it
}

type criRuntime struct {
	name string
	// annotations: the entry passes io.gondolin.* pod and container
	// annotations on to the runtime.
	annotations bool
}

// criRuntimes lists the CRI runtimes of a containerd config that run the
// gondolin shim.
func criRuntimes(doc map[string]any) []criRuntime {
	var out []criRuntime
	plugins, _ := doc["plugins"].(map[string]any)
	for _, p := range criPlugins {
		cri, _ := plugins[p].(map[string]any)
		ctrd, _ := cri["containerd"].(map[string]any)
		runtimes, _ := ctrd["runtimes"].(map[string]any)
		names := make([]string, 0, len(runtimes))
		for name := range runtimes {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			entry, _ := runtimes[name].(map[string]any)
			if rt, _ := entry["runtime_type"].(string); rt != hostinstall.RuntimeType {
				continue
			}
			out = append(out, criRuntime{name: name, annotations: passes(entry["pod_annotations"]) && passes(entry["container_annotations"])})
		}
	}
	return out
}

// passes reports whether a CRI annotation list passes every io.gondolin.*
// key on: the CRI matches each key against the list's patterns with
// path.Match (containerd's GetPassthroughAnnotations), which on Linux is
// filepath.Match.
func passes(v any) bool {
	list, _ := v.([]any)
	for _, key := range []string{"io.gondolin.policy", "io.gondolin.net.allow", "io.gondolin.secret.TOKEN", "io.gondolin.vm.memory"} {
		matched := false
		for _, e := range list {
			pattern, _ := e.(string)
			if ok, _ := filepath.Match(pattern, key); ok {
				matched = true
				break
			}
		}
		if !matched {
			return false
		}
	}
	return true
}

func decodeTOML(text []byte) (map[string]any, error) {
	var m map[string]any
	if err := toml.Unmarshal(text, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// checkDocker says whether daemon.json names a runtime that runs the
// gondolin shim.
func checkDocker(path string) Item {
	it := Item{Name: "docker"}
	text, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		it.Status = Warn
		it.Summary = path + " does not exist: docker run --runtime gondolin fails; run gondolin install --docker (or name the shim itself: --runtime " + hostinstall.RuntimeType + ")"
		return it
	}
	if err != nil {
		it.Status, it.Summary = Warn, "cannot read "+errText(err)
		return it
	}
	var doc struct {
		Runtimes       map[string]map[string]any `json:"runtimes"`
		DefaultRuntime string                    `json:"default-runtime"`
	}
	if err := json.Unmarshal(text, &doc); err != nil {
		it.Status, it.Summary = Fail, path+" is not valid JSON, or its runtimes are not objects, so dockerd does not start: "+err.Error()
		return it
	}
	var names []string
	for name, rt := range doc.Runtimes {
		t, _ := rt["runtimeType"].(string)
		if t == hostinstall.RuntimeType || filepath.IsAbs(t) && filepath.Base(t) == shimBinary {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		it.Status = Warn
		it.Summary = path + " has no runtime for gondolin: docker run --runtime gondolin fails; run gondolin install --docker (or name the shim itself: --runtime " + hostinstall.RuntimeType + ")"
		return it
	}
	slices.Sort(names)
	it.Status, it.Summary = OK, "registered in "+path+" as "+strings.Join(names, ", ")
	if slices.Contains(names, doc.DefaultRuntime) {
		it.Summary += "; the default runtime is " + doc.DefaultRuntime
	}
	it.Summary += " (reload dockerd after a change)"
	return it
}
