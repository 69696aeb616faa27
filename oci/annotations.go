package oci

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/earendil-works/gondolin-containerd/policy"
)

// AnnotationPrefix starts every annotation gondolin reads.
const AnnotationPrefix = "io.gondolin."

// Annotation keys (DESIGN.md, "Contracts"). The net.* and secret.* keys
// are the policy's own (policy.Key*): its denials name them.
const (
	AnnotationNetMode          = policy.KeyMode
	AnnotationNetAllow         = policy.KeyAllow
	AnnotationNetAllowInternal = policy.KeyAllowInternal
	AnnotationNetDNS           = policy.KeyDNS
	AnnotationNetTCPAllow      = policy.KeyTCPAllow
	AnnotationSecretPrefix     = policy.KeySecretPrefix
	AnnotationVMMemory         = AnnotationPrefix + "vm.memory"
	AnnotationVMCPUs           = AnnotationPrefix + "vm.cpus"
	// AnnotationPolicy names policies of the runtime config's [policies]
	// (comma-separated, merged) that the container's egress follows.
	AnnotationPolicy = AnnotationPrefix + "policy"
	// AnnotationGroup puts containers into one shim process (read by the
	// shim manager before the bundle is parsed; checked here).
	AnnotationGroup = AnnotationPrefix + "group"
)

var knownAnnotations = []string{
	AnnotationNetMode, AnnotationNetAllow, AnnotationNetAllowInternal, AnnotationNetDNS,
	AnnotationNetTCPAllow, AnnotationSecretPrefix + "NAME", AnnotationVMMemory, AnnotationVMCPUs,
	AnnotationPolicy, AnnotationGroup,
}

// Settings are the validated io.gondolin.* annotations of a container.
type Settings struct {
	// Rules are the container's egress policy.
	policy.Rules
	// MemoryMiB and CPUs are 0 when not set.
	MemoryMiB uint64
	CPUs      uint32
	// Group is io.gondolin.group, "" when not set.
	Group string
	// Policies are the names io.gondolin.policy lists.
	Policies []string
}

// Operator is what the runtime config says about annotations: the
// operator's defaults, applied to every container that does not set the
// key itself, and the keys containers may set (exact, or a prefix ending
// in "*"; empty means all).
type Operator struct {
	DefaultAnnotations map[string]string
	AllowedAnnotations []string
	// Policies are the named policies io.gondolin.policy picks from.
	Policies map[string]policy.Rules
}

// Allowed reports whether the operator lets containers set key.
func (op Operator) Allowed(key string) bool {
	if len(op.AllowedAnnotations) == 0 {
		return true
	}
	for _, p := range op.AllowedAnnotations {
		if p == key {
			return true
		}
		if strings.HasSuffix(p, "*") {
			if ok, _ := path.Match(p, key); ok || strings.HasPrefix(key, strings.TrimSuffix(p, "*")) {
				return true
			}
		}
	}
	return false
}

// ParseAnnotations validates every io.gondolin.* annotation. Other
// annotations are not gondolin's and are ignored. All problems are reported
// at once.
func ParseAnnotations(annotations map[string]string, op Operator) (*Settings, error) {
	// The rules the keys write start empty, so that what they leave unset
	// is known when the named policies are laid under them.
	s := &Settings{}
	var errs []error
	// The operator's defaults first (validated when the config loaded),
	// then what the container sets, each key replacing its default.
	for _, key := range gondolinKeys(op.DefaultAnnotations) {
		if _, ok := annotations[key]; !ok {
			if err := s.Set(key, op.DefaultAnnotations[key]); err != nil {
				errs = append(errs, fmt.Errorf("runtime config default_annotations: %w", err))
			}
		}
	}
	for _, key := range gondolinKeys(annotations) {
		if !op.Allowed(key) {
			errs = append(errs, fmt.Errorf("annotation %s is not allowed by the runtime config (allowed_annotations = %q)", key, op.AllowedAnnotations))
			continue
		}
		if err := s.Set(key, annotations[key]); err != nil {
			errs = append(errs, err)
		}
	}
	// Named policies are the base; the keys' own rules go over them (their
	// mode wins, their lists add).
	if len(s.Policies) > 0 {
		base, err := policy.Union(op.Policies, s.Policies)
		if err != nil {
			errs = append(errs, fmt.Errorf("annotation %s=%q: %w; the runtime config defines %s", AnnotationPolicy, strings.Join(s.Policies, ","), err, policyNames(op.Policies)))
		}
		s.Rules = base.Overlay(s.Rules)
	}
	s.Rules = s.Rules.WithDefaults()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// policyNames lists the named policies, for error messages.
func policyNames(named map[string]policy.Rules) string {
	if len(named) == 0 {
		return "no policies"
	}
	names := make([]string, 0, len(named))
	for n := range named {
		names = append(names, n)
	}
	sort.Strings(names)
	return "the policies " + strings.Join(names, ", ")
}

// gondolinKeys returns the io.gondolin.* keys of m, sorted.
func gondolinKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if strings.HasPrefix(k, AnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// PolicyNameRE is what a named policy may be called.
var PolicyNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)

// groupRE is what io.gondolin.group may hold: a name, as containerd's
// identifiers.
var groupRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,75}$`)

// Set reads one io.gondolin.* annotation.
func (s *Settings) Set(key, value string) error {
	bad := func(accepted string, err error) error {
		if err != nil {
			return fmt.Errorf("annotation %s=%q is invalid: %v; accepted: %s", key, value, err, accepted)
		}
		return fmt.Errorf("annotation %s=%q is invalid; accepted: %s", key, value, accepted)
	}
	switch {
	case policy.IsKey(key):
		if err := s.Rules.Set(key, value); err != nil {
			return fmt.Errorf("annotation %w", err)
		}
	case key == AnnotationVMMemory:
		mib, err := parseMemory(value)
		if err != nil {
			return bad("a size of at least 64 MiB: 512M, 2G, or a number of MiB", err)
		}
		s.MemoryMiB = mib
	case key == AnnotationVMCPUs:
		n, err := strconv.ParseUint(value, 10, 32)
		if err != nil || n < 1 || n > 255 {
			return bad("a whole number of vCPUs from 1 to 255", nil)
		}
		s.CPUs = uint32(n)
	case key == AnnotationPolicy:
		s.Policies = nil
		for _, name := range strings.Split(value, ",") {
			name = strings.TrimSpace(name)
			if !PolicyNameRE.MatchString(name) {
				return bad("a comma list of policy names from the runtime config's [policies] (letters, digits, '_' and '-')", nil)
			}
			s.Policies = append(s.Policies, name)
		}
	case key == AnnotationGroup:
		if !groupRE.MatchString(value) {
			return bad("a name of 1 to 76 letters, digits, '_', '.' or '-', starting with a letter or digit", nil)
		}
		s.Group = value
	default:
		return fmt.Errorf("annotation %s is not known; gondolin accepts %s", key, strings.Join(knownAnnotations, ", "))
	}
	return nil
}

// parseMemory reads 512M, 2G, 1024 (MiB), 512Mi, 2Gi.
func parseMemory(v string) (uint64, error) {
	s := strings.TrimSuffix(strings.TrimSpace(v), "i")
	mult := uint64(1)
	switch {
	case strings.HasSuffix(s, "G") || strings.HasSuffix(s, "g"):
		mult, s = 1024, s[:len(s)-1]
	case strings.HasSuffix(s, "M") || strings.HasSuffix(s, "m"):
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size", v)
	}
	mib := n * mult
	if mib < MinMemoryMiB {
		return 0, fmt.Errorf("%d MiB is below the minimum", mib)
	}
	return mib, nil
}
