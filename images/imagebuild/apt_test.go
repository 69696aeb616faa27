package imagebuild

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Real `apt-cache show --no-all-versions` output, Debian 12.
const metaShow = `Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Installed-Size: 13
Maintainer: Debian Kernel Team <debian-kernel@lists.debian.org>
Architecture: amd64
Provides: linux-latest-modules-6.1.0-56-cloud-amd64, virtualbox-guest-modules, wireguard-modules (= 1.0.0)
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
Description: Linux for x86-64 cloud (meta-package)
Description-md5: 11b016f38b41530eec9d7e80035fed66
Homepage: https://www.kernel.org/
Built-Using: linux (= 6.1.192-2)
Section: kernel
Priority: optional
Filename: pool/updates/main/l/linux-signed-amd64/linux-image-cloud-amd64_6.1.192-2_amd64.deb
Size: 1504
SHA256: 00be21c0c17f08ddf26e82d3b53fe7a41efa4a288938da6bb69e89c4b25c281d

`

const kernelShow = `Package: linux-image-6.1.0-56-cloud-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Installed-Size: 105548
Maintainer: Debian Kernel Team <debian-kernel@lists.debian.org>
Architecture: amd64
Replaces: linux-image-6.1.0-56-cloud-amd64-unsigned
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Suggests: linux-doc-6.1, debian-kernel-handbook, grub-pc | grub-efi-amd64 | extlinux
Conflicts: linux-image-6.1.0-56-cloud-amd64-unsigned
Breaks: fwupdate (<< 12-7), initramfs-tools (<< 0.120+deb8u2), wireless-regdb (<< 2019.06.03-1~)
Description: Linux 6.1 for x86-64 cloud (signed)
Description-md5: e242fc20b020c823e8161e99ef4b93ef
Homepage: https://www.kernel.org/
Built-Using: linux (= 6.1.192-2)
Recommends: firmware-linux-free, apparmor
Section: kernel
Priority: optional
Filename: pool/updates/main/l/linux-signed-amd64/linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb
Size: 26713492
SHA256: e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee

`

func TestParseControl(t *testing.T) {
	ps, err := ParseControl([]byte(metaShow + kernelShow + "Package: x\nDescription: short\n long line one\n .\n line two\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 3 {
		t.Fatalf("%d paragraphs, want 3", len(ps))
	}
	if ps[0]["Depends"] != "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)" || ps[1]["Size"] != "26713492" {
		t.Errorf("fields: %q / %q", ps[0]["Depends"], ps[1]["Size"])
	}
	if ps[2]["Description"] != "short\nlong line one\n.\nline two" {
		t.Errorf("continuation: %q", ps[2]["Description"])
	}
	for _, bad := range []string{" leading continuation\n", "no colon\n", "Bad Key: v\n"} {
		if _, err := ParseControl([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestParseDepends(t *testing.T) {
	g, err := ParseDepends("kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, libc6:amd64 (<< 3) [amd64]")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprint([][]Dependency{
		{{"kmod", "", ""}},
		{{"linux-base", ">=", "4.3~"}},
		{{"initramfs-tools", ">=", "0.120+deb8u2"}, {"linux-initramfs-tool", "", ""}},
		{{"libc6", "<<", "3"}},
	})
	if fmt.Sprint(g) != want {
		t.Errorf("got %v\nwant %v", g, want)
	}
	if _, err := ParseDepends("foo (~ 1)"); err == nil {
		t.Error("bad operator accepted")
	}
}

func TestKernelDependency(t *testing.T) {
	meta, err := SelectParagraph([]byte(metaShow), "linux-image-cloud-amd64", "")
	if err != nil {
		t.Fatal(err)
	}
	d, err := KernelDependency(meta)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "linux-image-6.1.0-56-cloud-amd64" || d.Version != "6.1.192-2" {
		t.Errorf("got %+v", d)
	}
	for _, deps := range []string{"", "linux-image-a (= 1), linux-image-b (= 2)", "linux-image-a (>= 1)", "linux-image-a"} {
		if _, err := KernelDependency(PackageInfo{Package: "m", Version: "1", Depends: deps}); err == nil {
			t.Errorf("accepted Depends %q", deps)
		}
	}
}

type fakeApt struct {
	show     map[string]string
	download func(spec, dir string) error
	calls    []string
}

func (f *fakeApt) Show(_ context.Context, spec string) ([]byte, error) {
	f.calls = append(f.calls, "show "+spec)
	if s, ok := f.show[spec]; ok {
		return []byte(s), nil
	}
	return nil, fmt.Errorf("apt-cache show %s: %w", spec, ErrUnknownPackage)
}

func (f *fakeApt) Download(_ context.Context, spec, dir string) error {
	f.calls = append(f.calls, "download "+spec)
	if f.download == nil {
		return errors.New("no download")
	}
	return f.download(spec, dir)
}

func TestResolveKernel(t *testing.T) {
	apt := &fakeApt{show: map[string]string{
		"linux-image-cloud-amd64":                    metaShow,
		"linux-image-6.1.0-56-cloud-amd64=6.1.192-2": kernelShow,
	}}
	rk, err := ResolveKernel(context.Background(), apt, "linux-image-cloud-amd64")
	if err != nil {
		t.Fatal(err)
	}
	p := rk.Package
	if rk.MetapackageVersion != "6.1.192-2" || p.Package != "linux-image-6.1.0-56-cloud-amd64" || p.Version != "6.1.192-2" ||
		p.SHA256 != "e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee" || p.Size != 26713492 {
		t.Errorf("resolved %+v", rk)
	}
	if DebFileName(p) != "linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb" {
		t.Errorf("deb name %s", DebFileName(p))
	}
	if n := DebFileName(PackageInfo{Package: "p", Version: "1:2.0-1", Architecture: "all"}); n != "p_1%3a2.0-1_all.deb" {
		t.Errorf("epoch deb name %s", n)
	}

	_, err = ResolveKernel(context.Background(), &fakeApt{}, "linux-image-cloud-amd64")
	if err == nil || !strings.Contains(err.Error(), "apt-get update") || !strings.Contains(err.Error(), "linux-image-cloud-amd64") {
		t.Errorf("unknown package error should name it and say to run apt-get update: %v", err)
	}
	noSHA := &fakeApt{show: map[string]string{
		"linux-image-cloud-amd64":                    metaShow,
		"linux-image-6.1.0-56-cloud-amd64=6.1.192-2": strings.Replace(kernelShow, "SHA256:", "SHA1:", 1),
	}}
	if _, err := ResolveKernel(context.Background(), noSHA, "linux-image-cloud-amd64"); err == nil || !strings.Contains(err.Error(), "SHA256") {
		t.Errorf("missing SHA256: %v", err)
	}
}

func TestFetchDeb(t *testing.T) {
	cache := t.TempDir()
	content := []byte("a fake deb")
	pkg := PackageInfo{Package: "linux-image-x", Version: "1-1", Architecture: "amd64", SHA256: SHA256Hex(content), Size: int64(len(content))}
	apt := &fakeApt{download: func(spec, dir string) error {
		return os.WriteFile(filepath.Join(dir, "whatever.deb"), content, 0o644)
	}}
	p, dl, err := fetchDeb(context.Background(), apt, cache, pkg)
	if err != nil || !dl || filepath.Base(p) != "linux-image-x_1-1_amd64.deb" {
		t.Fatalf("first fetch: %s %v %v", p, dl, err)
	}
	_, dl, err = fetchDeb(context.Background(), apt, cache, pkg)
	if err != nil || dl || len(apt.calls) != 1 || apt.calls[0] != "download linux-image-x=1-1" {
		t.Fatalf("second fetch should use the cache: %v %v %v", dl, err, apt.calls)
	}
	// A corrupted cache entry is fetched again.
	os.WriteFile(p, []byte("corrupt"), 0o644)
	if _, dl, err = fetchDeb(context.Background(), apt, cache, pkg); err != nil || !dl {
		t.Fatalf("refetch: %v %v", dl, err)
	}
	// A download that does not match apt's checksum is rejected.
	bad := pkg
	bad.Version = "2-1"
	bad.SHA256 = SHA256Hex([]byte("other"))
	if _, _, err := fetchDeb(context.Background(), apt, cache, bad); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("checksum mismatch: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cache, DebFileName(bad))); err == nil {
		t.Error("mismatching download kept")
	}
	ents, _ := os.ReadDir(cache)
	if len(ents) != 1 {
		t.Errorf("cache holds %d entries, want 1 (temp dirs removed)", len(ents))
	}
}
