package imagebuild

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// DefaultMetapackage is the Debian metapackage whose current kernel the guest boots.
const DefaultMetapackage = "linux-image-cloud-amd64"

// Paragraph is one stanza of Debian control data (apt-cache show output).
type Paragraph map[string]string

// ParseControl parses Debian control-format stanzas separated by blank lines.
// Continuation lines (leading space or tab) are appended to the previous field
// with a newline. Field names keep their case.
func ParseControl(data []byte) ([]Paragraph, error) {
	var out []Paragraph
	cur := Paragraph{}
	last := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	lineNo := 0
	flush := func() {
		if len(cur) > 0 {
			out = append(out, cur)
		}
		cur, last = Paragraph{}, ""
	}
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if last == "" {
				return nil, fmt.Errorf("control data line %d: continuation line without a field", lineNo)
			}
			cur[last] += "\n" + strings.TrimSpace(line)
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok || k == "" || strings.ContainsAny(k, " \t") {
				return nil, fmt.Errorf("control data line %d: cannot parse %q", lineNo, line)
			}
			cur[k] = strings.TrimSpace(v)
			last = k
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	flush()
	return out, nil
}

// Dependency is one alternative in a Depends field, e.g.
// "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)".
type Dependency struct {
	Name    string // without any :arch qualifier
	Op      string // "", "=", ">=", "<=", ">>", "<<"
	Version string
}

var depRe = regexp.MustCompile(`^([a-z0-9][a-z0-9+.\-]*)(?::[a-z0-9\-]+)?\s*(?:\(\s*(=|>=|<=|>>|<<)\s*([^\s)]+)\s*\))?\s*(?:\[[^\]]*\])?$`)

// ParseDepends parses a Depends field into its comma-separated groups, each a
// list of "|" alternatives.
func ParseDepends(s string) ([][]Dependency, error) {
	var groups [][]Dependency
	s = strings.ReplaceAll(s, "\n", " ")
	for _, g := range strings.Split(s, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		var alts []Dependency
		for _, a := range strings.Split(g, "|") {
			a = strings.TrimSpace(a)
			m := depRe.FindStringSubmatch(a)
			if m == nil {
				return nil, fmt.Errorf("cannot parse dependency %q", a)
			}
			alts = append(alts, Dependency{Name: m[1], Op: m[2], Version: m[3]})
		}
		groups = append(groups, alts)
	}
	return groups, nil
}

// PackageInfo is what apt knows about one version of a binary package.
type PackageInfo struct {
	Package      string
	Version      string
	Architecture string
	Filename     string // path in the archive
	Size         int64
	SHA256       string
	Depends      string
}

// PackageInfoFromParagraph extracts the fields mkimage uses.
func PackageInfoFromParagraph(p Paragraph) (PackageInfo, error) {
	pi := PackageInfo{
		Package:      p["Package"],
		Version:      p["Version"],
		Architecture: p["Architecture"],
		Filename:     p["Filename"],
		SHA256:       strings.ToLower(p["SHA256"]),
		Depends:      p["Depends"],
	}
	if pi.Package == "" || pi.Version == "" {
		return pi, errors.New("apt-cache output has no Package/Version")
	}
	if s := p["Size"]; s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return pi, fmt.Errorf("%s %s: bad Size %q", pi.Package, pi.Version, s)
		}
		pi.Size = n
	}
	return pi, nil
}

// SelectParagraph returns the first stanza for package name (and version, if
// not empty) from apt-cache show output.
func SelectParagraph(data []byte, name, version string) (PackageInfo, error) {
	ps, err := ParseControl(data)
	if err != nil {
		return PackageInfo{}, err
	}
	for _, p := range ps {
		if p["Package"] != name || (version != "" && p["Version"] != version) {
			continue
		}
		return PackageInfoFromParagraph(p)
	}
	if version != "" {
		return PackageInfo{}, fmt.Errorf("apt-cache show gave no entry for %s version %s", name, version)
	}
	return PackageInfo{}, fmt.Errorf("apt-cache show gave no entry for %s", name)
}

// KernelDependency finds the concrete kernel image package a metapackage
// depends on: the single linux-image-* dependency pinned with "(= version)".
func KernelDependency(meta PackageInfo) (Dependency, error) {
	groups, err := ParseDepends(meta.Depends)
	if err != nil {
		return Dependency{}, fmt.Errorf("%s %s: Depends: %w", meta.Package, meta.Version, err)
	}
	var found []Dependency
	for _, g := range groups {
		for _, d := range g {
			if strings.HasPrefix(d.Name, "linux-image-") {
				found = append(found, d)
			}
		}
	}
	switch {
	case len(found) == 0:
		return Dependency{}, fmt.Errorf("%s %s depends on no linux-image-* package (Depends: %q)", meta.Package, meta.Version, meta.Depends)
	case len(found) > 1:
		return Dependency{}, fmt.Errorf("%s %s depends on several linux-image-* packages (Depends: %q)", meta.Package, meta.Version, meta.Depends)
	case found[0].Op != "=" || found[0].Version == "":
		return Dependency{}, fmt.Errorf("%s %s: kernel dependency %q has no exact version", meta.Package, meta.Version, found[0].Name)
	}
	return found[0], nil
}

// Apt is the part of apt mkimage uses; ExecApt runs the real tools.
type Apt interface {
	// Show returns `apt-cache show --no-all-versions SPEC` output (SPEC is
	// "pkg" for the candidate version, or "pkg=version").
	Show(ctx context.Context, spec string) ([]byte, error)
	// Download runs `apt-get download SPEC` in dir.
	Download(ctx context.Context, spec, dir string) error
}

// ErrUnknownPackage is returned (wrapped) when apt has no such package.
var ErrUnknownPackage = errors.New("unknown package")

// ExecApt runs apt-cache and apt-get.
type ExecApt struct{}

// Show implements Apt.
func (ExecApt) Show(ctx context.Context, spec string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "apt-cache", "show", "--no-all-versions", spec)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	msg := strings.TrimSpace(stderr.String())
	if err != nil || stdout.Len() == 0 {
		if strings.Contains(msg, "No packages found") || strings.Contains(msg, "Unable to locate") ||
			strings.Contains(msg, "not found") || (err == nil && stdout.Len() == 0) {
			return nil, fmt.Errorf("apt-cache show %s: %w (%s)", spec, ErrUnknownPackage, msg)
		}
		return nil, fmt.Errorf("apt-cache show %s: %v: %s", spec, err, msg)
	}
	return stdout.Bytes(), nil
}

// Download implements Apt.
func (ExecApt) Download(ctx context.Context, spec, dir string) error {
	// Running as root into a directory the _apt user cannot write makes apt warn
	// and fall back to an unsandboxed download; ask for that directly.
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", spec)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("apt-get download %s: %v: %s", spec, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ResolvedKernel is the concrete kernel package a metapackage resolves to.
type ResolvedKernel struct {
	Metapackage        string
	MetapackageVersion string
	// Package is the linux-image-<release> package. Package and Version are
	// set by ResolveMetapackage; Lookup fills in apt's SHA256, Size, etc.
	Package PackageInfo
}

// ResolveKernel resolves the metapackage and looks up the kernel package.
func ResolveKernel(ctx context.Context, apt Apt, metapackage string) (*ResolvedKernel, error) {
	rk, err := ResolveMetapackage(ctx, apt, metapackage)
	if err != nil {
		return nil, err
	}
	if err := rk.Lookup(ctx, apt); err != nil {
		return nil, err
	}
	return rk, nil
}

// ResolveMetapackage asks apt for the metapackage's candidate version and the
// kernel package name and exact version it pins (one apt-cache call).
func ResolveMetapackage(ctx context.Context, apt Apt, metapackage string) (*ResolvedKernel, error) {
	out, err := apt.Show(ctx, metapackage)
	if err != nil {
		if errors.Is(err, ErrUnknownPackage) {
			return nil, fmt.Errorf("apt does not know %s: run `apt-get update` (as root) so apt's package lists include it, then retry: %w", metapackage, err)
		}
		return nil, err
	}
	meta, err := SelectParagraph(out, metapackage, "")
	if err != nil {
		return nil, err
	}
	dep, err := KernelDependency(meta)
	if err != nil {
		return nil, err
	}
	return &ResolvedKernel{
		Metapackage:        metapackage,
		MetapackageVersion: meta.Version,
		Package:            PackageInfo{Package: dep.Name, Version: dep.Version},
	}, nil
}

// Lookup asks apt for the kernel package version's archive entry: its SHA256
// (which apt verified against the signed Release file) and size.
func (rk *ResolvedKernel) Lookup(ctx context.Context, apt Apt) error {
	spec := rk.Package.Package + "=" + rk.Package.Version
	out, err := apt.Show(ctx, spec)
	if err != nil {
		if errors.Is(err, ErrUnknownPackage) {
			return fmt.Errorf("%s %s needs %s, which apt does not know: run `apt-get update` and retry: %w", rk.Metapackage, rk.MetapackageVersion, spec, err)
		}
		return err
	}
	pkg, err := SelectParagraph(out, rk.Package.Package, rk.Package.Version)
	if err != nil {
		return err
	}
	if !sha256Re.MatchString(pkg.SHA256) {
		return fmt.Errorf("apt reports no valid SHA256 for %s (got %q)", spec, pkg.SHA256)
	}
	rk.Package = pkg
	return nil
}

var sha256Re = regexp.MustCompile(`^[0-9a-f]{64}$`)

// DebFileName is the cache file name for a package version, as apt names it
// (an epoch's ':' becomes "%3a").
func DebFileName(pi PackageInfo) string {
	arch := pi.Architecture
	if arch == "" {
		arch = "amd64"
	}
	return fmt.Sprintf("%s_%s_%s.deb", pi.Package, strings.ReplaceAll(pi.Version, ":", "%3a"), arch)
}
