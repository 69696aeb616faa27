package mountutil

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOpenBeneath(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	for _, d := range []string{"c1/rootfs", "c1/binds"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "c1/binds/0"), []byte("file"), 0o644); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"abs":       "/",
		"up":        "../..",
		"c1/out":    filepath.Join("..", "..", filepath.Base(outside)),
		"c1/inside": "rootfs",
		"c1/around": "../c1/rootfs",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	var rootSt unix.Stat_t
	if err := unix.Stat(filepath.Join(root, "c1/rootfs"), &rootSt); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"c1/rootfs", "c1/inside", "c1/around", "c1/binds/0", "."} {
		f, err := OpenBeneath(root, rel)
		if err != nil {
			t.Errorf("OpenBeneath(%q): %v", rel, err)
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(FdPath(f), &st); err != nil {
			t.Errorf("stat %s of %q: %v", FdPath(f), rel, err)
		}
		if (rel == "c1/inside" || rel == "c1/around") && st.Ino != rootSt.Ino {
			t.Errorf("OpenBeneath(%q) opened inode %d, want c1/rootfs's %d", rel, st.Ino, rootSt.Ino)
		}
		f.Close()
	}
	for _, rel := range []string{"abs", "abs/etc", "up", "c1/out", "..", "c1/../..", "/etc"} {
		f, err := OpenBeneath(root, rel)
		if err == nil {
			f.Close()
			t.Errorf("OpenBeneath(%q) left the root", rel)
			continue
		}
		if !errors.Is(err, ErrOutside) {
			t.Errorf("OpenBeneath(%q) = %v, want ErrOutside", rel, err)
		}
	}
	if _, err := OpenBeneath(root, "c1/missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenBeneath of a missing path = %v, want not exist", err)
	}
}
