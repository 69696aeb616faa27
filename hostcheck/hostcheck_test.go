package hostcheck

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/earendil-works/gondolin-containerd/images/imagebuild"
	"github.com/earendil-works/gondolin-containerd/vmm"
)

func write(t *testing.T, path, text string, mode os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func expect(t *testing.T, it Item, status Status, substrings ...string) {
	t.Helper()
	if it.Status != status {
		t.Fatalf("%s: status %s, want %s: %s", it.Name, it.Status, status, it.Summary)
	}
	for _, s := range substrings {
		if !strings.Contains(it.Summary, s) {
			t.Fatalf("%s: summary %q, want it to hold %q", it.Name, it.Summary, s)
		}
	}
}

func TestCheckImage(t *testing.T) {
	dir := t.TempDir()
	kernel := write(t, filepath.Join(dir, imagebuild.KernelFile), "kernel bytes", 0o644)
	initrd := write(t, filepath.Join(dir, imagebuild.InitrdFile), "initrd bytes", 0o644)

	expect(t, checkImage("kernel", "kernel_path", filepath.Join(dir, "missing")), Fail, "missing", "kernel_path", "make images")
	expect(t, checkImage("kernel", "kernel_path", kernel), Warn, "no manifest.json")

	m := imagebuild.Manifest{Schema: imagebuild.ManifestSchema, Minimal: imagebuild.MinimalInfo{KernelRelease: "6.1.192-gondolin"}}
	m.Outputs = []imagebuild.Artifact{
		imagebuild.NewArtifact(imagebuild.KernelFile, imagebuild.RoleKernel, "", []byte("kernel bytes")),
		imagebuild.NewArtifact(imagebuild.InitrdFile, imagebuild.RoleInitrd, "", []byte("other initrd bytes")),
	}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, imagebuild.ManifestFile), string(b), 0o644)
	expect(t, checkImage("kernel", "kernel_path", kernel), OK, "matches manifest.json", "kernel 6.1.192-gondolin")
	expect(t, checkImage("initrd", "initrd_path", initrd), Warn, "differs from", "make images")
	other := write(t, filepath.Join(dir, "vmlinuz-custom"), "x", 0o644)
	expect(t, checkImage("kernel", "kernel_path", other), Warn, "not listed")

	write(t, filepath.Join(dir, imagebuild.ManifestFile), "{not json", 0o644)
	expect(t, checkImage("kernel", "kernel_path", kernel), Warn, "manifest")
}

func writeCA(t *testing.T, dir string, notAfter time.Time, keyMode os.FileMode) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gondolin egress CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	write(t, filepath.Join(dir, "ca.crt"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
	write(t, filepath.Join(dir, "ca.key"), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})), keyMode)
}

func TestCheckCA(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	dir := filepath.Join(t.TempDir(), "ca")
	expect(t, checkCA(dir, now), OK, "not created yet", dir)

	writeCA(t, dir, now.Add(365*24*time.Hour), 0o600)
	expect(t, checkCA(dir, now), OK, "gondolin egress CA", "valid until 2031-01-01")
	expect(t, checkCA(dir, now.Add(350*24*time.Hour)), OK, "expires within 30 days")

	writeCA(t, dir, now.Add(365*24*time.Hour), 0o644)
	expect(t, checkCA(dir, now), Warn, "mode 0644")

	write(t, filepath.Join(dir, "ca.crt"), "garbage", 0o644)
	expect(t, checkCA(dir, now), Fail, "not PEM", "remove "+dir)

	os.Remove(filepath.Join(dir, "ca.key"))
	expect(t, checkCA(dir, now), OK, "makes a new CA")
}

const gondolinEntry = `
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.gondolin]
  runtime_type = "io.containerd.gondolin.v1"
  pod_annotations = ["io.gondolin.*"]
  container_annotations = ["io.gondolin.*"]
`

func TestCheckContainerd(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "config.toml")
	expect(t, checkContainerd(main), Warn, "does not exist", "gondolin install --containerd")

	write(t, main, "version = 3\n[plugins\n", 0o644)
	expect(t, checkContainerd(main), Fail, "not valid TOML")

	write(t, main, "version = 3\n"+gondolinEntry, 0o644)
	expect(t, checkContainerd(main), OK, "registered as gondolin in "+main)

	// Through a relative glob import (what gondolin install writes).
	write(t, main, "version = 3\nimports = [\"conf.d/*.toml\"]\n", 0o644)
	expect(t, checkContainerd(main), Warn, "does not know gondolin")
	drop := write(t, filepath.Join(dir, "conf.d", "gondolin.toml"), "version = 3\n"+gondolinEntry, 0o644)
	expect(t, checkContainerd(main), OK, "registered as gondolin in "+drop)

	// Version 2 names, another runtime name, annotations not passed.
	write(t, main, `version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vm]
  runtime_type = "io.containerd.gondolin.v1"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
`, 0o644)
	expect(t, checkContainerd(main), Warn, "registered as vm in", "drops pods' io.gondolin.* annotations")

	write(t, main, "version = 3\nimports = [\"/nonexistent/gondolin.toml\"]\n", 0o644)
	expect(t, checkContainerd(main), Fail, "cannot be read", "containerd does not start")
}

func TestPasses(t *testing.T) {
	for _, tc := range []struct {
		list []any
		want bool
	}{
		{[]any{"io.gondolin.*"}, true},
		{[]any{"*"}, true},
		{[]any{"io.gondolin.net.*"}, false},
		{[]any{"io.gondolin.net.*", "io.gondolin.secret.*", "io.gondolin.policy", "io.gondolin.vm.*"}, true},
		{nil, false},
	} {
		if got := passes(tc.list); got != tc.want {
			t.Errorf("passes(%v) = %v, want %v", tc.list, got, tc.want)
		}
	}
}

func TestCheckDocker(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "daemon.json")
	expect(t, checkDocker(path), Warn, "does not exist", "gondolin install --docker")
	write(t, path, `{"runtimes": `, 0o644)
	expect(t, checkDocker(path), Fail, "not valid JSON")
	write(t, path, `{"runtimes": {"runsc": {"path": "/usr/bin/runsc"}}}`, 0o644)
	expect(t, checkDocker(path), Warn, "no runtime for gondolin")
	write(t, path, `{"runtimes": {"gondolin": {"runtimeType": "io.containerd.gondolin.v1"}, "vm": {"runtimeType": "/opt/gondolin/bin/containerd-shim-gondolin-v1"}}, "default-runtime": "gondolin"}`, 0o644)
	expect(t, checkDocker(path), OK, "as gondolin, vm", "the default runtime is gondolin")
}

func TestCheckKVM(t *testing.T) {
	usable := func() (bool, string) { return true, "/dev/kvm is usable" }
	unusable := func() (bool, string) { return false, "the CPU advertises neither vmx nor svm" }
	for _, tc := range []struct {
		want   string
		probe  func() (bool, string)
		status Status
		accel  vmm.Accelerator
		sub    string
	}{
		{"auto", usable, OK, vmm.AccelKVM, "VMs run with KVM"},
		{"auto", unusable, Warn, vmm.AccelTCG, "neither vmx nor svm"},
		{"kvm", unusable, Fail, vmm.AccelKVM, "accelerator = kvm"},
		{"kvm", usable, OK, vmm.AccelKVM, "usable"},
		{"tcg", usable, Info, vmm.AccelTCG, "accelerator = tcg"},
	} {
		it, accel := checkKVM(tc.want, tc.probe)
		expect(t, it, tc.status, tc.sub)
		if accel != tc.accel {
			t.Errorf("%s: accelerator %s, want %s", tc.want, accel, tc.accel)
		}
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	exeDir := filepath.Join(dir, "bin")
	bad := write(t, filepath.Join(dir, "bad.toml"), "accelerator = \"fast\"\n", 0o644)
	cfg, it := checkConfig(bad, exeDir)
	expect(t, it, Fail, "accelerator", "auto, kvm, tcg", "built-in defaults")
	if cfg == nil || cfg.KernelPath != filepath.Join(dir, "share", "gondolin", "vmlinuz") {
		t.Fatalf("a bad config should leave the defaults: %+v", cfg)
	}
	good := write(t, filepath.Join(dir, "good.toml"), "kernel_path = \"/k\"\n", 0o644)
	cfg, it = checkConfig(good, exeDir)
	expect(t, it, OK, good)
	if cfg.KernelPath != "/k" {
		t.Fatalf("kernel_path %q", cfg.KernelPath)
	}
	_, it = checkConfig(filepath.Join(dir, "missing.toml"), exeDir)
	expect(t, it, Fail, "missing.toml")
}

func TestCheckSecretSources(t *testing.T) {
	dir := t.TempDir()
	good := write(t, filepath.Join(dir, "good"), "v", 0o600)
	open := write(t, filepath.Join(dir, "open"), "v", 0o644)
	conf := write(t, filepath.Join(dir, "c.toml"), "[secrets.A]\nfile = \""+good+"\"\nhosts = \"a.example.com\"\n[secrets.B]\nenv = \"B\"\nhosts = \"a.example.com\"\n", 0o644)
	cfg, _ := checkConfig(conf, dir)
	it, ok := checkSecretSources(cfg)
	if !ok {
		t.Fatal("no item for a config with a secret file")
	}
	expect(t, it, OK, "A")
	conf = write(t, filepath.Join(dir, "c.toml"), "[secrets.A]\nfile = \""+open+"\"\nhosts = \"a.example.com\"\n[secrets.C]\nfile = \""+dir+"/none\"\nhosts = \"a.example.com\"\n", 0o644)
	cfg, _ = checkConfig(conf, dir)
	it, _ = checkSecretSources(cfg)
	expect(t, it, Warn, "secrets.A.file", "chmod 600", "secrets.C.file", "no such file")
	conf = write(t, filepath.Join(dir, "c.toml"), "[secrets.B]\nenv = \"B\"\n", 0o644)
	cfg, _ = checkConfig(conf, dir)
	if _, ok := checkSecretSources(cfg); ok {
		t.Fatal("an item for a config without secret files")
	}
}

func TestCheckShim(t *testing.T) {
	defer func(f func(string) (string, error)) { lookPath = f }(lookPath)
	dir := t.TempDir()
	self := filepath.Join(dir, "gondolin")
	lookPath = func(string) (string, error) { return "", errors.New("not found") }
	if p, it := checkShim(self); p != "" {
		t.Fatalf("found %s", p)
	} else {
		expect(t, it, Fail, "neither on PATH nor beside gondolin")
	}
	shim := write(t, filepath.Join(dir, shimBinary), "#!/bin/sh\n", 0o755)
	p, it := checkShim(self)
	expect(t, it, Warn, "not on PATH", "--shim "+shim)
	if p != shim {
		t.Fatalf("found %q, want %q", p, shim)
	}
	lookPath = func(string) (string, error) { return "/usr/local/bin/" + shimBinary, nil }
	_, it = checkShim(self)
	expect(t, it, OK, "/usr/local/bin/"+shimBinary)
}

func TestVsock(t *testing.T) {
	expect(t, checkVsock(filepath.Join(t.TempDir(), "none")), Info, "absent", "virtio-serial")
	expect(t, checkVsock(t.TempDir()), Info, "present")
}

func TestSpeed(t *testing.T) {
	expect(t, speedItem(vmm.AccelKVM, true), Info, "fast")
	expect(t, speedItem(vmm.AccelTCG, false), Info, "slowest")
}

func TestReport(t *testing.T) {
	r := &Report{CanRun: true}
	r.add(Item{Name: "qemu", Status: OK, Summary: "/usr/bin/qemu"})
	r.add(Item{Name: "kvm", Status: Warn, Summary: "not usable"})
	var b bytes.Buffer
	_ = r.WriteText(&b)
	if !r.CanRun || !strings.Contains(b.String(), "ok    qemu        /usr/bin/qemu\n") || !strings.Contains(b.String(), "can run gondolin containers") {
		t.Fatalf("report:\n%s", b.String())
	}
	r.add(Item{Name: "kernel", Status: Fail, Summary: "missing"})
	b.Reset()
	_ = r.WriteText(&b)
	if r.CanRun || !strings.Contains(b.String(), "cannot run gondolin containers: fix kernel.") {
		t.Fatalf("report:\n%s", b.String())
	}
	b.Reset()
	_ = r.WriteJSON(&b)
	var got struct {
		CanRun bool   `json:"can_run"`
		Items  []Item `json:"items"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil || got.CanRun || len(got.Items) != 3 || got.Items[2].Status != Fail {
		t.Fatalf("JSON %v:\n%s", err, b.String())
	}
}
