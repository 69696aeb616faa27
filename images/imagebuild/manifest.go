package imagebuild

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
)

// ManifestSchema is bumped whenever the image contents change for the same
// inputs (new default modules, different layout), so old outputs are rebuilt.
const ManifestSchema = 2

// Roles of manifest inputs and outputs.
const (
	RoleKernelPackage = "kernel-package"
	RoleAgent         = "agent"
	RoleKernel        = "kernel"        // the default (minimal) kernel
	RoleInitrd        = "initrd"        // its initramfs
	RoleKernelStock   = "kernel-stock"  // Debian's kernel
	RoleInitrdStock   = "initrd-stock"  // its initramfs, with modules
	RoleKernelSource  = "kernel-source" // linux-source tarball
	RoleKernelConfig  = "kernel-config" // the config fragment (input), the full .config (output)
	RoleKernelPatch   = "kernel-patch"  // a patch applied to the kernel source (input)
)

// MinimalInfo records how the minimal kernel was built.
type MinimalInfo struct {
	// KernelRelease is its `uname -r`, e.g. "6.1.192-gondolin".
	KernelRelease string `json:"kernelRelease"`
	SourcePackage string `json:"sourcePackage"`
	SourceVersion string `json:"sourceVersion"`
	Compiler      string `json:"compiler"`
	// FragmentSHA256 is the config fragment's; CacheKey covers all of the
	// above and names the build in the cache.
	FragmentSHA256 string `json:"fragmentSHA256"`
	CacheKey       string `json:"cacheKey"`
	// The fixed KBUILD_BUILD_* values that make the build reproducible.
	BuildTimestamp string `json:"buildTimestamp"`
	BuildUser      string `json:"buildUser"`
	BuildHost      string `json:"buildHost"`
}

// Manifest records every input and output of an image build with its
// checksum. It has no timestamps and every list is sorted, so the same inputs
// give the same bytes.
type Manifest struct {
	Schema int `json:"schema"`
	// Minimal describes the default kernel (vmlinuz, initrd.img).
	Minimal MinimalInfo `json:"minimal"`
	// KernelRelease is `uname -r` of the stock kernel (vmlinuz-stock), e.g.
	// "6.1.0-56-cloud-amd64"; the fields below up to Inputs describe it too.
	KernelRelease string `json:"kernelRelease"`
	// Metapackage and its version, which resolved to the kernel package.
	Metapackage        string `json:"metapackage"`
	MetapackageVersion string `json:"metapackageVersion"`
	// Inputs: the kernel .deb, the linux-source tarball, the config
	// fragment, the kernel patches and the agent binary; sorted by name.
	Inputs []Artifact `json:"inputs"`
	// Outputs: the files named in doc.go; sorted by name.
	Outputs []Artifact `json:"outputs"`
	// Modules shipped in the stock initrd (decompressed), sorted by name.
	Modules []ModuleArtifact `json:"modules"`
	// LoadOrder is the content of LoadOrderPath, one path per element.
	LoadOrder []string `json:"loadOrder"`
	// Requested lists the requested modules as "name:CONFIG_SYMBOL", sorted.
	Requested []string `json:"requested"`
	// BuiltIn lists the requested modules the kernel has built in, sorted.
	BuiltIn []string `json:"builtIn"`
}

// Artifact is one input or output file.
type Artifact struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Version string `json:"version,omitempty"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
}

// ModuleArtifact is one kernel module in the initrd.
type ModuleArtifact struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"` // modinfo version=, when set
	Path    string `json:"path"`              // in the initrd
	Source  string `json:"source"`            // in the kernel package, below /lib/modules/<release>
	SHA256  string `json:"sha256"`            // of the decompressed .ko
	Size    int64  `json:"size"`
}

// NewArtifact describes data.
func NewArtifact(name, role, version string, data []byte) Artifact {
	return Artifact{Name: name, Role: role, Version: version, SHA256: SHA256Hex(data), Size: int64(len(data))}
}

// SHA256Hex is the lower-case hex SHA-256 of data.
func SHA256Hex(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// Normalize sorts every list so the encoding is canonical.
func (m *Manifest) Normalize() {
	sort.Slice(m.Inputs, func(i, j int) bool { return m.Inputs[i].Name < m.Inputs[j].Name })
	sort.Slice(m.Outputs, func(i, j int) bool { return m.Outputs[i].Name < m.Outputs[j].Name })
	sort.Slice(m.Modules, func(i, j int) bool { return m.Modules[i].Name < m.Modules[j].Name })
	sort.Strings(m.Requested)
	sort.Strings(m.BuiltIn)
	// LoadOrder is an order, not a set: kept as is.
	if m.Inputs == nil {
		m.Inputs = []Artifact{}
	}
	if m.Outputs == nil {
		m.Outputs = []Artifact{}
	}
	if m.Modules == nil {
		m.Modules = []ModuleArtifact{}
	}
	if m.LoadOrder == nil {
		m.LoadOrder = []string{}
	}
	if m.Requested == nil {
		m.Requested = []string{}
	}
	if m.BuiltIn == nil {
		m.BuiltIn = []string{}
	}
}

// Marshal returns the canonical JSON encoding (normalized, indented, with a
// trailing newline).
func (m *Manifest) Marshal() ([]byte, error) {
	c := *m
	c.Inputs = append([]Artifact(nil), m.Inputs...)
	c.Outputs = append([]Artifact(nil), m.Outputs...)
	c.Modules = append([]ModuleArtifact(nil), m.Modules...)
	c.Requested = append([]string(nil), m.Requested...)
	c.BuiltIn = append([]string(nil), m.BuiltIn...)
	c.LoadOrder = append([]string(nil), m.LoadOrder...)
	c.Normalize()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&c); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// ParseManifest decodes a manifest written by Marshal.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return &m, nil
}

// Input returns the input with the given role.
func (m *Manifest) Input(role string) (Artifact, bool) {
	for _, a := range m.Inputs {
		if a.Role == role {
			return a, true
		}
	}
	return Artifact{}, false
}

// Output returns the output with the given role.
func (m *Manifest) Output(role string) (Artifact, bool) {
	for _, a := range m.Outputs {
		if a.Role == role {
			return a, true
		}
	}
	return Artifact{}, false
}

// RequestKeys renders module requests as they are recorded in Requested.
func RequestKeys(reqs []ModuleRequest) []string {
	out := make([]string, 0, len(reqs))
	for _, r := range reqs {
		out = append(out, r.Name+":"+r.Config)
	}
	sort.Strings(out)
	return out
}
