package container

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/agentlog"
	"github.com/earendil-works/gondolin-containerd/guest-agent/internal/mountutil"
)

// trustStorePaths are where images keep their CA bundle (the files TLS
// libraries read by default), in the order the image's own roots are
// taken from: the first that exists.
var trustStorePaths = []string{
	"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Alpine, Arch
	"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // Fedora, RHEL 7+ (what the above link to)
	"/etc/ssl/cert.pem",                                 // Alpine; OpenSSL's default with OPENSSLDIR=/etc/ssl
	"/etc/pki/tls/cacert.pem",                           // older RHEL
	"/etc/pki/tls/cert.pem",                             // OpenSSL's default on Fedora/RHEL
	"/etc/ssl/ca-bundle.pem",                            // openSUSE
}

// caFallbackDirs: when the image has no trust store, the bundle goes into
// the first of these the spec mounts a tmpfs on (so nothing is written to
// the container's root), as caFallbackName.
var caFallbackDirs = []string{"/run", "/tmp"}

const caFallbackName = "gondolin/ca-certificates.crt"

// caEnvVars name a CA bundle file for OpenSSL (and so most of Python, Ruby,
// curl, git), Go, Python requests, curl, and Node (which adds the file to
// its built-in roots).
var caEnvVars = []string{"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"}

// maxBundle bounds the image bundle the agent reads (Debian's is ~200 KiB).
const maxBundle = 16 << 20

// parseCAPEM checks extra_ca_pem: one or more CERTIFICATE blocks, and no
// other or broken block (pem.Decode would skip a broken one silently, so
// the BEGIN lines are counted). Text around the blocks, as openssl prints
// it, is dropped: the blocks are returned re-encoded, so the merged bundle
// is clean PEM whatever the line endings or headers given.
func parseCAPEM(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var out []byte
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		n++
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("extra_ca_pem: PEM block %d is a %q, not a CERTIFICATE", n, blk.Type)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: blk.Type, Bytes: blk.Bytes})...)
	}
	if begins := bytes.Count(b, []byte("-----BEGIN ")); begins != n {
		return nil, fmt.Errorf("extra_ca_pem: %d of its %d PEM blocks are malformed", begins-n, begins)
	}
	if n == 0 {
		return nil, errors.New("extra_ca_pem: no PEM CERTIFICATE block")
	}
	return out, nil
}

// mergeBundle is the image's bundle followed by the extra certificates.
func mergeBundle(image, extra []byte) []byte {
	out := make([]byte, 0, len(image)+1+len(extra))
	out = append(out, image...)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	return append(out, extra...)
}

// caEnv is the environment naming the bundle at p.
func caEnv(p string) []string {
	env := make([]string, len(caEnvVars))
	for i, k := range caEnvVars {
		env[i] = k + "=" + p
	}
	return env
}

// addEnvDefaults returns env with each KEY=value of defaults added unless
// env sets KEY already (to anything, even empty: the process's choice
// wins). env itself is not changed.
func addEnvDefaults(env, defaults []string) []string {
	out := append([]string(nil), env...)
	for _, d := range defaults {
		key, _, _ := strings.Cut(d, "=")
		if !envHas(env, key) {
			out = append(out, d)
		}
	}
	return out
}

func envHas(env []string, key string) bool {
	for _, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == key {
			return true
		}
	}
	return false
}

// trustStore is an image trust-store file: a regular file below rootfs.
type trustStore struct {
	path   string // as listed in trustStorePaths
	target string // resolved below rootfs (symlinks followed inside it)
}

// findTrustStores returns the trust stores that exist in rootfs, in
// trustStorePaths order, each file once however many names lead to it
// (Alpine's /etc/ssl/cert.pem links to certs/ca-certificates.crt).
func findTrustStores(rootfs string) []trustStore {
	var out []trustStore
	seen := map[string]bool{}
	for _, p := range trustStorePaths {
		target, err := mountutil.SecureJoin(rootfs, p)
		if err != nil {
			if !errors.Is(err, unix.ENOTDIR) {
				agentlog.Warnf("CA trust store %s: %v", p, err)
			}
			continue
		}
		fi, err := os.Lstat(target)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTDIR) {
				agentlog.Warnf("CA trust store %s: %v", p, err)
			}
			continue
		}
		if !fi.Mode().IsRegular() {
			agentlog.Warnf("CA trust store %s is not a regular file (%s); left alone", p, fi.Mode().Type())
			continue
		}
		if !seen[target] {
			seen[target] = true
			out = append(out, trustStore{path: p, target: target})
		}
	}
	return out
}

// caFallbackPath is where the bundle goes in a container whose image has
// no trust store: below the first of caFallbackDirs the spec mounts a
// tmpfs on (returned as dir); "" when there is none.
func caFallbackPath(mounts []*api.Mount) (dir, file string) {
	for _, d := range caFallbackDirs {
		for _, m := range mounts {
			if path.Clean("/"+m.GetDestination()) == d && mountutil.NormalizeType(m.GetType()) == "tmpfs" {
				return d, path.Join(d, caFallbackName)
			}
		}
	}
	return "", ""
}

// caFallbackStore makes the mount point for the bundle in the spec's
// tmpfs (already mounted). Any trouble is logged and skips the bundle:
// the image has no trust store for its TLS clients anyway.
func caFallbackStore(rootfs string, mounts []*api.Mount) (trustStore, bool) {
	dir, p := caFallbackPath(mounts)
	if p == "" {
		return trustStore{}, false
	}
	target, err := makeFallbackMountPoint(rootfs, dir, p)
	if err != nil {
		agentlog.Warnf("CA bundle at %s: %v", p, err)
		return trustStore{}, false
	}
	return trustStore{path: p, target: target}, true
}

// makeFallbackMountPoint creates the file p below the tmpfs at dir and
// returns its guest path. It checks before and after creating directories
// that they are on a tmpfs other than the root's file system: nothing is
// written to the root.
func makeFallbackMountPoint(rootfs, dir, p string) (string, error) {
	mnt, err := mountutil.SecureJoin(rootfs, dir)
	if err != nil {
		return "", err
	}
	if !onOwnTmpfs(rootfs, mnt) {
		return "", fmt.Errorf("%s is not a tmpfs of its own", containerPath(rootfs, mnt))
	}
	target, err := mountutil.SecureJoin(rootfs, p)
	if err != nil {
		return "", err
	}
	parent := filepath.Dir(target)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", err
	}
	if !onOwnTmpfs(rootfs, parent) {
		return "", fmt.Errorf("%s is not on a tmpfs of its own", containerPath(rootfs, parent))
	}
	return target, ensureMountPoint(target, false)
}

// onOwnTmpfs reports whether p is on a tmpfs that is not rootfs's file
// system.
func onOwnTmpfs(rootfs, p string) bool {
	var root, st unix.Stat_t
	if unix.Stat(rootfs, &root) != nil || unix.Stat(p, &st) != nil {
		return false
	}
	return st.Dev != root.Dev && isTmpfs(p)
}

// setupCABundle shows the image's roots plus extra (PEM, from parseCAPEM)
// at every trust store of the image, read-only, or at the fallback path.
// It returns the bundle's path in the container; "" when there was
// nowhere to put it.
func setupCABundle(rootfs, dir string, extra []byte, mounts []*api.Mount) (string, error) {
	stores := findTrustStores(rootfs)
	var image []byte
	if len(stores) > 0 {
		var err error
		if image, err = readRegular(stores[0].target, maxBundle); err != nil {
			return "", fmt.Errorf("read the image's CA bundle %s: %w", stores[0].path, err)
		}
	} else if fb, ok := caFallbackStore(rootfs, mounts); ok {
		stores = []trustStore{fb}
	} else {
		return "", nil
	}
	bundle := filepath.Join(dir, "ca-certificates.crt")
	if err := os.WriteFile(bundle, mergeBundle(image, extra), 0o644); err != nil {
		return "", fmt.Errorf("write the CA bundle: %w", err)
	}
	for _, s := range stores {
		if err := bindFileReadonly(bundle, s.target); err != nil {
			return "", fmt.Errorf("show the CA bundle at %s: %w", s.path, err)
		}
	}
	return containerPath(rootfs, stores[0].target), nil
}
