package imagebuild

import (
	"bytes"
	"strings"
	"testing"
)

func sampleManifest(reverse bool) *Manifest {
	m := &Manifest{
		Schema:             ManifestSchema,
		KernelRelease:      "6.1.0-56-cloud-amd64",
		Metapackage:        "linux-image-cloud-amd64",
		MetapackageVersion: "6.1.192-2",
		Inputs: []Artifact{
			{Name: "linux-image-6.1.0-56-cloud-amd64", Role: RoleKernelPackage, Version: "6.1.192-2", SHA256: "aa", Size: 1},
			NewArtifact("gondolin-agent", RoleAgent, "", []byte("agent")),
		},
		Outputs: []Artifact{
			NewArtifact(KernelFile, RoleKernel, "6.1.0-56-cloud-amd64", []byte("k")),
			NewArtifact(InitrdFile, RoleInitrd, "", []byte("i")),
		},
		Modules: []ModuleArtifact{
			{Name: "virtio_ring", Path: "/lib/modules/virtio_ring.ko", Source: "kernel/drivers/virtio/virtio_ring.ko", SHA256: "bb", Size: 2},
			{Name: "virtio", Path: "/lib/modules/virtio.ko", Source: "kernel/drivers/virtio/virtio.ko", SHA256: "cc", Size: 3},
		},
		LoadOrder: []string{"/lib/modules/virtio_ring.ko", "/lib/modules/virtio.ko"},
		Requested: RequestKeys(DefaultModules),
	}
	if reverse {
		for _, s := range [][2]int{{0, 1}} {
			m.Inputs[s[0]], m.Inputs[s[1]] = m.Inputs[s[1]], m.Inputs[s[0]]
			m.Outputs[s[0]], m.Outputs[s[1]] = m.Outputs[s[1]], m.Outputs[s[0]]
			m.Modules[s[0]], m.Modules[s[1]] = m.Modules[s[1]], m.Modules[s[0]]
		}
	}
	return m
}

func TestManifestDeterministic(t *testing.T) {
	a, err := sampleManifest(false).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b, err := sampleManifest(true).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("order of inputs changed the manifest:\n%s\n%s", a, b)
	}
	s := string(a)
	// Sorted lists; the load order is kept as given.
	if strings.Index(s, `"gondolin-agent"`) > strings.Index(s, `"linux-image-6.1.0-56-cloud-amd64"`) ||
		strings.Index(s, `"name": "initrd.img"`) > strings.Index(s, `"name": "vmlinuz"`) ||
		strings.Index(s, `"name": "virtio"`) > strings.Index(s, `"name": "virtio_ring"`) {
		t.Errorf("lists not sorted:\n%s", s)
	}
	if !strings.Contains(s, "\"loadOrder\": [\n    \"/lib/modules/virtio_ring.ko\",\n    \"/lib/modules/virtio.ko\"\n  ]") {
		t.Errorf("load order changed:\n%s", s)
	}
	if !strings.HasSuffix(s, "}\n") {
		t.Error("no trailing newline")
	}
	m, err := ParseManifest(a)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := m.Marshal()
	if !bytes.Equal(a, c) {
		t.Error("parse/marshal round trip differs")
	}
	if in, ok := m.Input(RoleAgent); !ok || in.SHA256 != SHA256Hex([]byte("agent")) || in.Size != 5 {
		t.Errorf("agent input %+v", in)
	}
	if _, err := ParseManifest([]byte(`{"schema":1,"buildTime":"now"}`)); err == nil {
		t.Error("unknown field accepted")
	}
}

func TestManifestEmptyLists(t *testing.T) {
	b, err := (&Manifest{Schema: 1}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "null") {
		t.Errorf("null lists:\n%s", b)
	}
}
