package distroimage

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Bootstrapper fills an empty directory with a root filesystem.
type Bootstrapper interface {
	// Version identifies the tool; it is part of the cache key, since another
	// version may lay out the same packages differently.
	Version(ctx context.Context) (string, error)
	// Bootstrap installs the system described by opts into dir, which exists and is
	// empty. logFile receives the tool's full output.
	Bootstrap(ctx context.Context, opts *Options, dir string, logFile io.Writer) error
}

// Debootstrap runs Debian's debootstrap.
type Debootstrap struct {
	Path string // default "debootstrap" (looked up on PATH, then in /usr/sbin)
	// Progress receives the milestones of the run ("Installing core packages...");
	// nil drops them.
	Progress func(line string)
}

func (d Debootstrap) path() (string, error) {
	name := d.Path
	if name == "" {
		name = "debootstrap"
	}
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	if d.Path == "" {
		if _, serr := os.Stat("/usr/sbin/debootstrap"); serr == nil {
			return "/usr/sbin/debootstrap", nil // /usr/sbin is not on every user's PATH
		}
	}
	return "", fmt.Errorf("%s not found (install it: make deps): %w", name, err)
}

// Version returns the output of `debootstrap --version`.
func (d Debootstrap) Version(ctx context.Context) (string, error) {
	p, err := d.path()
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, p, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", p, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Args returns debootstrap's command line arguments for opts and dir.
func Args(opts *Options, dir string) []string {
	return []string{
		"--variant=" + Variant,
		"--arch=" + opts.Arch,
		"--include=" + strings.Join(opts.Include, ","),
		// Explicit, so that a missing keyring is an error instead of an unverified
		// download.
		"--keyring=" + opts.Keyring,
		opts.Suite, dir, opts.Mirror,
	}
}

// Bootstrap runs debootstrap into dir.
func (d Debootstrap) Bootstrap(ctx context.Context, opts *Options, dir string, logFile io.Writer) error {
	p, err := d.path()
	if err != nil {
		return err
	}
	if _, err := os.Stat(opts.Keyring); err != nil {
		return fmt.Errorf("archive keyring: %w (install debian-archive-keyring: make deps)", err)
	}
	cmd := exec.CommandContext(ctx, p, Args(opts, dir)...)
	// Its own process group, so that cancelling stops dpkg and the maintainer scripts
	// in the chroot too, and with SIGTERM, so that debootstrap's exit handler still
	// unmounts /proc and /sys in the target.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8")
	tail := &tailBuffer{max: 40}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.scan(pr, logFile, tail)
	}()
	err = cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		return fmt.Errorf("debootstrap %s: %w; last lines:\n%s", strings.Join(Args(opts, dir), " "), err, tail)
	}
	return nil
}

// scan copies debootstrap's output to logFile and tail and passes its milestones on:
// it prints five lines per package, too many to show.
func (d Debootstrap) scan(r io.Reader, logFile io.Writer, tail *tailBuffer) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(logFile, line)
		tail.add(line)
		if d.Progress != nil && isMilestone(line) {
			d.Progress(line)
		}
	}
	_, _ = io.Copy(io.Discard, r) // a line too long for the scanner must not block debootstrap
}

func isMilestone(line string) bool {
	for _, p := range []string{"I: Retrieving ", "I: Validating ", "I: Extracting ", "I: Unpacking ", "I: Configuring "} {
		if strings.HasPrefix(line, p) {
			return false
		}
	}
	return strings.TrimSpace(line) != ""
}

// tailBuffer keeps the last max lines written to it.
type tailBuffer struct {
	max   int
	lines []string
}

func (t *tailBuffer) add(line string) {
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

func (t *tailBuffer) String() string { return strings.Join(t.lines, "\n") }

// mountsUnder returns the mount points at or below dir, deepest first, from
// /proc/self/mountinfo.
func mountsUnder(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("listing mounts: %w", err)
	}
	return parseMountsUnder(data, dir), nil
}

func parseMountsUnder(mountinfo []byte, dir string) []string {
	var out []string
	for _, line := range strings.Split(string(mountinfo), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	// Deepest first: a mount inside another must go before it. Lines are in mount
	// order, and a path mounted twice must be unmounted twice.
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeTree unmounts whatever is still mounted below dir (debootstrap's /proc, /sys
// or /dev mounts after a failed or interrupted run) and removes it. It does not
// remove anything while a mount remains: RemoveAll would descend into it and delete
// the host's files.
func removeTree(dir string) error {
	mounts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	for _, mp := range mounts {
		// MNT_DETACH: a process still holding the mount must not keep the tree alive.
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("unmounting %s: %w", mp, err)
		}
	}
	if left, err := mountsUnder(dir); err != nil {
		return err
	} else if len(left) > 0 {
		return fmt.Errorf("not removing %s: still mounted there: %s", dir, strings.Join(left, " "))
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	return nil
}

// checkRootfs makes sure the tree is the image the egress tests need: a shell, curl
// that runs, and the CA bundle it verifies servers with.
func checkRootfs(ctx context.Context, root string) error {
	for _, f := range []string{"bin/bash", "bin/sh", "usr/bin/curl"} {
		if err := isExecutable(filepath.Join(root, f)); err != nil {
			return err
		}
	}
	bundle, err := os.ReadFile(filepath.Join(root, CABundle))
	if err != nil {
		return fmt.Errorf("CA bundle: %w", err)
	}
	if n := bytes.Count(bundle, []byte("BEGIN CERTIFICATE")); n < 10 {
		return fmt.Errorf("CA bundle /%s holds %d certificates; update-ca-certificates did not run?", CABundle, n)
	}
	// Run it, in a chroot: a missing library would only show in the container.
	out, err := exec.CommandContext(ctx, "chroot", root, "/usr/bin/curl", "--version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("chroot %s curl --version: %w: %s", root, err, bytes.TrimSpace(out))
	}
	if !bytes.Contains(out, []byte("https")) {
		return fmt.Errorf("curl in the image does not support https: %s", bytes.TrimSpace(out))
	}
	return nil
}

func isExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file (%v)", p, fi.Mode())
	}
	return nil
}

// installedVersions returns the versions of the given installed packages, read from
// the tree's dpkg status file.
func installedVersions(root string, packages []string) (map[string]string, error) {
	data, err := os.ReadFile(filepath.Join(root, "var/lib/dpkg/status"))
	if err != nil {
		return nil, fmt.Errorf("reading the dpkg status: %w", err)
	}
	want := map[string]bool{}
	for _, p := range packages {
		want[p] = true
	}
	out := map[string]string{}
	for _, stanza := range strings.Split(string(data), "\n\n") {
		fields := stanzaFields(stanza)
		if want[fields["Package"]] && strings.HasSuffix(fields["Status"], " installed") {
			out[fields["Package"]] = fields["Version"]
		}
	}
	for _, p := range packages {
		if out[p] == "" {
			return nil, fmt.Errorf("package %s is not installed in the image", p)
		}
	}
	return out, nil
}

func stanzaFields(stanza string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(stanza, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, " ") {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}
