package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func criImages(t *testing.T) []CRIImage {
	t.Helper()
	imgs := CRIImages(fakeBusybox(t), []byte("\x7fELF critest-helper"))
	for i := range imgs {
		imgs[i].Options.Applets = fakeApplets
	}
	return imgs
}

// layerFiles returns the entries of a built image's layer by name.
func layerFiles(t *testing.T, b *Blobs) map[string]TarFile {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b.LayerData))
	if err != nil {
		t.Fatal(err)
	}
	return ByName(readTar(t, zr))
}

func imageConfig(t *testing.T, b *Blobs) Image {
	t.Helper()
	var img Image
	if err := json.Unmarshal(b.ConfigJSON, &img); err != nil {
		t.Fatal(err)
	}
	return img
}

func TestBuildBlobsMatchesBuild(t *testing.T) {
	opts := Options{Busybox: fakeBusybox(t), Applets: fakeApplets, User: "1000:100", Description: "x",
		Files: []File{{Path: "usr/local/bin/tool", Mode: 0o755, Data: []byte("tool")}}}
	_, res := build(t, opts)
	b, err := BuildBlobs(opts)
	if err != nil {
		t.Fatal(err)
	}
	if b.Manifest.Digest != res.Manifest.Digest || b.Config.Digest != res.Config.Digest || b.Layer.Digest != res.Layer.Digest {
		t.Errorf("BuildBlobs gave manifest %s config %s layer %s, Build %s %s %s", b.Manifest.Digest, b.Config.Digest,
			b.Layer.Digest, res.Manifest.Digest, res.Config.Digest, res.Layer.Digest)
	}
	if sum(b.ManifestJSON) != b.Manifest.Digest || sum(b.ConfigJSON) != b.Config.Digest || sum(b.LayerData) != b.Layer.Digest {
		t.Error("a blob's bytes do not match its digest")
	}
	cache := NewLayerCache()
	opts.Layers = cache
	c1, err := BuildBlobs(opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Description = "y"
	c2, err := BuildBlobs(opts)
	if err != nil {
		t.Fatal(err)
	}
	if c1.Manifest.Digest != b.Manifest.Digest || c2.Layer.Digest != b.Layer.Digest || len(cache.gz) != 1 {
		t.Errorf("with a layer cache: manifest %s (want %s), layer %s (want %s), %d cached layers (want 1)",
			c1.Manifest.Digest, b.Manifest.Digest, c2.Layer.Digest, b.Layer.Digest, len(cache.gz))
	}
	if c2.Config.Digest == c1.Config.Digest {
		t.Error("another Description gave the same config")
	}
}

func TestCRIImages(t *testing.T) {
	imgs := criImages(t)
	names := map[string]bool{}
	configs := map[string]string{}
	byName := map[string]*Blobs{}
	for _, img := range imgs {
		b, err := BuildBlobs(img.Options)
		if err != nil {
			t.Fatalf("%s: %v", img.Names[0], err)
		}
		if prev, ok := configs[b.Config.Digest]; ok {
			t.Errorf("%s and %s have the same image ID: the specs that remove one by ID would remove both", prev, img.Names[0])
		}
		configs[b.Config.Digest] = img.Names[0]
		for _, n := range img.Names {
			if names[n] {
				t.Errorf("%s is named twice", n)
			}
			names[n] = true
			byName[n] = b
		}
		if _, err := RepoTags(img.Names); err != nil {
			t.Error(err)
		}
		files := layerFiles(t, b)
		h, ok := files[CRIHelperPath]
		if !ok || h.Hdr.Mode != 0o755 || string(h.Data) != "\x7fELF critest-helper" {
			t.Errorf("%s: %s missing or wrong: %+v", img.Names[0], CRIHelperPath, h.Hdr)
		}
		for _, l := range []string{"usr/local/bin/pgrep", "usr/local/bin/ipcs"} {
			if f := files[l]; f.Hdr == nil || f.Hdr.Typeflag != tar.TypeSymlink || f.Hdr.Linkname != "/"+CRIHelperPath {
				t.Errorf("%s: %s is not a link to the helper", img.Names[0], l)
			}
		}
		if f := files["bin/sh"]; f.Hdr == nil || f.Hdr.Typeflag != tar.TypeLink || f.Hdr.Linkname != "bin/busybox" {
			t.Errorf("%s: /bin/sh is not a hard link to /bin/busybox: %+v", img.Names[0], f.Hdr)
		}
		if !strings.Contains(string(files["etc/passwd"].Data), "nobody:x:65534:") {
			t.Errorf("%s: /etc/passwd has no nobody", img.Names[0])
		}
	}
	for _, want := range []string{
		"registry.k8s.io/e2e-test-images/busybox:1.29-2", "registry.k8s.io/e2e-test-images/nginx:1.14-2",
		"registry.k8s.io/e2e-test-images/httpd:2.4.39-4", "registry.k8s.io/e2e-test-images/nonewprivs:1.3",
		"registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9",
		"gcr.io/k8s-staging-cri-tools/test-image-latest:latest", "gcr.io/k8s-staging-cri-tools/test-image-tag:test",
		"gcr.io/k8s-staging-cri-tools/test-image-tag:all", "gcr.io/k8s-staging-cri-tools/test-image-tags:3",
		"gcr.io/k8s-staging-cri-tools/test-image-3:latest", "gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64:latest",
		"gcr.io/k8s-staging-cri-tools/test-image-predefined-group:latest",
	} {
		if !names[want] {
			t.Errorf("no stand-in for %s", want)
		}
	}
	same := func(a, b string) bool { return byName[a].Manifest.Digest == byName[b].Manifest.Digest }
	if !same("registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9") ||
		!same("gcr.io/k8s-staging-cri-tools/test-image-tags:1", "gcr.io/k8s-staging-cri-tools/test-image-tags:3") {
		t.Error("names of one image got different images")
	}

	users := map[string]string{
		"test-image-user-uid": "1002", "test-image-user-username": "www-data",
		"test-image-user-uid-group": "1003:users", "test-image-user-username-group": "www-data:users",
		"test-image-predefined-group": "1000",
	}
	for n, u := range users {
		if got := imageConfig(t, byName["gcr.io/k8s-staging-cri-tools/"+n+":latest"]).Config.User; got != u {
			t.Errorf("%s: User %q, want %q", n, got, u)
		}
	}
	pg := layerFiles(t, byName["gcr.io/k8s-staging-cri-tools/test-image-predefined-group:latest"])
	if g := string(pg["etc/group"].Data); !strings.Contains(g, "group-defined-in-image:x:50000:default-user\n") {
		t.Errorf("predefined group: /etc/group lacks the group:\n%s", g)
	}
	if h := pg["home/default-user/"].Hdr; h == nil || h.Uid != 1000 || h.Gid != 1000 {
		t.Errorf("predefined group: /home/default-user not owned by 1000: %+v", h)
	}

	nnp := byName["registry.k8s.io/e2e-test-images/nonewprivs:1.3"]
	if f := layerFiles(t, nnp)["usr/local/bin/nnp"]; f.Hdr == nil || f.Hdr.Mode != 0o4755 || f.Hdr.Uid != 0 {
		t.Errorf("nonewprivs: /usr/local/bin/nnp is not setuid root: %+v", f.Hdr)
	}
	if c := imageConfig(t, nnp).Config; len(c.Cmd) != 0 || len(c.Entrypoint) != 1 {
		t.Errorf("nonewprivs: want the entrypoint alone, got Entrypoint %q Cmd %q", c.Entrypoint, c.Cmd)
	}
	for n, listen := range map[string]string{
		"registry.k8s.io/e2e-test-images/nginx:1.14-2":            ":80",
		"gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64:latest": ":12003",
	} {
		c := imageConfig(t, byName[n]).Config
		if strings.Join(c.Cmd, " ") != "nginx -listen "+listen {
			t.Errorf("%s: Cmd %q", n, c.Cmd)
		}
		if f := layerFiles(t, byName[n])["usr/sbin/nginx"]; f.Hdr == nil || f.Hdr.Linkname != "/"+CRIHelperPath {
			t.Errorf("%s: no /usr/sbin/nginx link", n)
		}
	}
}

func TestHardLinksFollowTheirTarget(t *testing.T) {
	b, err := BuildBlobs(Options{Busybox: fakeBusybox(t), Applets: fakeApplets, HardLinks: true})
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b.LayerData))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	links := 0
	for _, f := range readTar(t, zr) {
		name := strings.TrimSuffix(f.Hdr.Name, "/")
		if f.Hdr.Typeflag == tar.TypeLink {
			links++
			if !seen[f.Hdr.Linkname] {
				t.Errorf("hard link %s comes before its target %s", name, f.Hdr.Linkname)
			}
		}
		if d := strings.TrimSuffix(name[:strings.LastIndex("/"+name, "/")], "/"); d != "" && !seen[d] {
			t.Errorf("%s comes before its directory %s", name, d)
		}
		seen[name] = true
	}
	if links == 0 {
		t.Error("no hard links")
	}
}

func TestAddFilesRefuses(t *testing.T) {
	bb := fakeBusybox(t)
	for _, tc := range []struct {
		what  string
		files []File
	}{
		{"a path the image has", []File{{Path: "etc/passwd", Mode: 0o644}}},
		{"an applet link", []File{{Path: "bin/sh", Mode: 0o755}}},
		{"an absolute path", []File{{Path: "/usr/x", Mode: 0o644}}},
		{"a path out of the image", []File{{Path: "../x", Mode: 0o644}}},
		{"the root", []File{{Path: ".", Dir: true, Mode: 0o755}}},
		{"two kinds", []File{{Path: "x", Link: "/y", Dir: true}}},
		{"data and a link", []File{{Path: "x", Link: "/y", Data: []byte("z")}}},
		{"a file type in the mode", []File{{Path: "x", Mode: 0o100644}}},
		{"a file under a file", []File{{Path: "etc/passwd/x", Mode: 0o644}}},
		{"the same path twice", []File{{Path: "x", Mode: 0o644}, {Path: "x", Mode: 0o644}}},
	} {
		_, err := BuildBlobs(Options{Busybox: bb, Applets: fakeApplets, Files: tc.files})
		if err == nil {
			t.Errorf("%s: want an error", tc.what)
		}
	}
	b, err := BuildBlobs(Options{Busybox: bb, Applets: fakeApplets, Files: []File{
		{Path: "a/b/c/file", Mode: 0o4711, UID: 5, GID: 6, Data: []byte("x")},
		{Path: "a/b/link", Link: "c/file"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	files := layerFiles(t, b)
	for _, d := range []string{"a/", "a/b/", "a/b/c/"} {
		if f := files[d]; f.Hdr == nil || f.Hdr.Typeflag != tar.TypeDir || f.Hdr.Mode != 0o755 {
			t.Errorf("parent %s not made: %+v", d, f.Hdr)
		}
	}
	if f := files["a/b/c/file"]; f.Hdr == nil || f.Hdr.Mode != 0o4711 || f.Hdr.Uid != 5 || f.Hdr.Gid != 6 {
		t.Errorf("a/b/c/file: %+v", f.Hdr)
	}
	if f := files["a/b/link"]; f.Hdr == nil || f.Hdr.Linkname != "c/file" {
		t.Errorf("a/b/link: %+v", f.Hdr)
	}
}

func TestSplitName(t *testing.T) {
	for _, tc := range []struct{ name, host, repo, tag string }{
		{"registry.k8s.io/pause:3.9", "registry.k8s.io", "pause", "3.9"},
		{"gcr.io/k8s-staging-cri-tools/test-image-tags:1", "gcr.io", "k8s-staging-cri-tools/test-image-tags", "1"},
		{"127.0.0.1:5000/a/b:latest", "127.0.0.1:5000", "a/b", "latest"},
	} {
		host, repo, tag, err := SplitName(tc.name)
		if err != nil || host != tc.host || repo != tc.repo || tag != tc.tag {
			t.Errorf("SplitName(%q) = %q %q %q %v", tc.name, host, repo, tag, err)
		}
	}
	for _, bad := range []string{"busybox:1", "library/busybox:1", "registry.k8s.io/pause", "registry.k8s.io/pause@sha256:00", "registry.k8s.io/:1"} {
		if _, _, _, err := SplitName(bad); err == nil {
			t.Errorf("SplitName(%q): want an error", bad)
		}
	}
	rt, err := RepoTags([]string{"registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9", "gcr.io/x/y:2", "gcr.io/x/y:1"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(rt) != "map[pause:[3.9] x/y:[1 2]]" {
		t.Errorf("RepoTags: %v", rt)
	}
}

// fakeRegistry is the part of the distribution API that Push uses.
type fakeRegistry struct {
	mu         sync.Mutex
	blobs      map[string][]byte // repo@digest
	manifests  map[string][]byte // repo:tag
	uploads    int
	badDigests bool // answer manifests with a wrong digest
}

func (r *fakeRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := strings.TrimPrefix(req.URL.Path, "/v2/")
	switch {
	case req.Method == http.MethodHead && strings.Contains(p, "/blobs/sha256:"):
		repo, d, _ := strings.Cut(p, "/blobs/")
		if _, ok := r.blobs[repo+"@"+d]; ok {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusNotFound)
	case req.Method == http.MethodPost && strings.HasSuffix(p, "/blobs/uploads/"):
		r.uploads++
		// Relative, with a query of its own, as distribution answers.
		w.Header().Set("Location", fmt.Sprintf("/v2/%sblobs/uploads/u%d?_state=abc", strings.TrimSuffix(p, "blobs/uploads/"), r.uploads))
		w.WriteHeader(http.StatusAccepted)
	case req.Method == http.MethodPut && strings.Contains(p, "/blobs/uploads/"):
		repo, _, _ := strings.Cut(p, "/blobs/uploads/")
		body, _ := io.ReadAll(req.Body)
		d := req.URL.Query().Get("digest")
		if req.URL.Query().Get("_state") != "abc" || sum(body) != d {
			http.Error(w, "digest mismatch or state lost", http.StatusBadRequest)
			return
		}
		r.blobs[repo+"@"+d] = body
		w.WriteHeader(http.StatusCreated)
	case req.Method == http.MethodPut && strings.Contains(p, "/manifests/"):
		repo, tag, _ := strings.Cut(p, "/manifests/")
		body, _ := io.ReadAll(req.Body)
		if req.Header.Get("Content-Type") != MediaTypeManifest {
			http.Error(w, "manifest type "+req.Header.Get("Content-Type"), http.StatusBadRequest)
			return
		}
		var m Manifest
		if err := json.Unmarshal(body, &m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, d := range append([]Descriptor{m.Config}, m.Layers...) {
			if _, ok := r.blobs[repo+"@"+d.Digest]; !ok {
				http.Error(w, "blob unknown "+d.Digest, http.StatusBadRequest)
				return
			}
		}
		r.manifests[repo+":"+tag] = body
		d := sum(body)
		if r.badDigests {
			d = sum([]byte("other"))
		}
		w.Header().Set("Docker-Content-Digest", d)
		w.WriteHeader(http.StatusCreated)
	default:
		http.Error(w, "unexpected "+req.Method+" "+req.URL.String(), http.StatusBadRequest)
	}
}

func TestPush(t *testing.T) {
	reg := &fakeRegistry{blobs: map[string][]byte{}, manifests: map[string][]byte{}}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	b, err := BuildBlobs(Options{Busybox: fakeBusybox(t), Applets: fakeApplets})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := Push(ctx, srv.Client(), srv.URL, "k8s-staging-cri-tools/test-image-tags", []string{"1", "2"}, b); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"1", "2"} {
		if got := reg.manifests["k8s-staging-cri-tools/test-image-tags:"+tag]; !bytes.Equal(got, b.ManifestJSON) {
			t.Errorf("tag %s: the registry holds %q", tag, got)
		}
	}
	if !bytes.Equal(reg.blobs["k8s-staging-cri-tools/test-image-tags@"+b.Layer.Digest], b.LayerData) {
		t.Error("the layer did not arrive whole")
	}
	if reg.uploads != 2 {
		t.Errorf("%d uploads, want 2 (layer and config)", reg.uploads)
	}
	// Again: the registry has the blobs, only the manifest goes.
	if err := Push(ctx, srv.Client(), srv.URL+"/", "k8s-staging-cri-tools/test-image-tags", []string{"3"}, b); err != nil {
		t.Fatal(err)
	}
	if reg.uploads != 2 {
		t.Errorf("a second push uploaded blobs the registry had (%d uploads)", reg.uploads)
	}
	if err := Push(ctx, srv.Client(), srv.URL, "x", nil, b); err == nil {
		t.Error("no tag: want an error")
	}
	reg.badDigests = true
	if err := Push(ctx, srv.Client(), srv.URL, "x", []string{"1"}, b); err == nil || !strings.Contains(err.Error(), "stored digest") {
		t.Errorf("a registry storing other bytes: want an error naming the digest, got %v", err)
	}
}
