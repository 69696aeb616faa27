package distroimage

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// capabilityXattr is the one extended attribute a layer carries: file capabilities
// (e.g. ping's cap_net_raw) are part of what a binary may do. Others, like SELinux
// labels, describe the build host, not the image.
const capabilityXattr = "security.capability"

// PackStats says what PackLayer wrote and what it left out.
type PackStats struct {
	Entries   int      // tar entries written
	HardLinks int      // of them, hard links to an earlier entry
	Bytes     int64    // file content bytes
	Skipped   []string // device nodes and sockets, relative to the root
}

// PackLayer writes the tree below root as an uncompressed layer tar to w. Names are
// relative to root ("etc/passwd", directories end in "/"); owners (numeric only),
// permission bits including setuid/setgid/sticky, symlinks, FIFOs and file
// capabilities are kept. A file with several names is stored once, its other names as
// hard links to the first one in walk order. Every entry gets mtime, and the walk is
// in lexical order, so the same tree gives the same bytes.
//
// Device nodes and sockets are left out (and listed in PackStats.Skipped): a runtime
// mounts its own /dev, and unpacking device nodes fails in user namespaces and
// rootless snapshotters. PackLayer refuses a tree with another filesystem mounted
// inside it (a /proc or /dev bind mount left by debootstrap would otherwise be packed).
func PackLayer(w io.Writer, root string, mtime time.Time) (*PackStats, error) {
	st, err := lstat(root)
	if err != nil {
		return nil, err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil, fmt.Errorf("packing %s: not a directory", root)
	}
	p := &packer{
		tw:    tar.NewWriter(w),
		root:  root,
		dev:   uint64(st.Dev),
		mtime: mtime.UTC().Truncate(time.Second),
		links: map[fileID]string{},
	}
	if err := filepath.WalkDir(root, p.visit); err != nil {
		return nil, fmt.Errorf("packing %s: %w", root, err)
	}
	if err := p.tw.Close(); err != nil {
		return nil, fmt.Errorf("packing %s: %w", root, err)
	}
	return &p.stats, nil
}

type fileID struct{ dev, ino uint64 }

type packer struct {
	tw    *tar.Writer
	root  string
	dev   uint64
	mtime time.Time
	links map[fileID]string // first name of every multiply-linked file
	stats PackStats
}

func (p *packer) visit(full string, _ fs.DirEntry, walkErr error) error {
	if walkErr != nil {
		return walkErr
	}
	rel, err := filepath.Rel(p.root, full)
	if err != nil {
		return err
	}
	if rel == "." {
		return nil // the root itself has no entry: the snapshotter owns it
	}
	rel = filepath.ToSlash(rel)
	st, err := lstat(full)
	if err != nil {
		return err
	}
	if uint64(st.Dev) != p.dev {
		return fmt.Errorf("%s is on another filesystem (a mount left inside the tree?)", rel)
	}
	h, err := p.header(rel, full, st)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if h == nil {
		p.stats.Skipped = append(p.stats.Skipped, rel)
		return nil
	}
	if err := p.write(h, full); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	return nil
}

// header returns the tar header for the file at full (named rel in the layer), or nil
// for a file the layer leaves out.
func (p *packer) header(rel, full string, st *syscall.Stat_t) (*tar.Header, error) {
	h := &tar.Header{
		Name:    rel,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: p.mtime,
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		h.Typeflag = tar.TypeDir
		h.Name += "/"
	case syscall.S_IFREG:
		if first, ok := p.firstName(rel, st); ok {
			h.Typeflag = tar.TypeLink
			h.Linkname = first
			return h, nil // a hard link shares the first name's data and attributes
		}
		h.Typeflag = tar.TypeReg
		h.Size = st.Size
		if err := addCapability(h, full); err != nil {
			return nil, err
		}
	case syscall.S_IFLNK:
		target, err := os.Readlink(full)
		if err != nil {
			return nil, err
		}
		h.Typeflag = tar.TypeSymlink
		h.Linkname = target
	case syscall.S_IFIFO:
		h.Typeflag = tar.TypeFifo
	default: // character and block devices, sockets
		return nil, nil
	}
	return h, nil
}

// firstName returns the name under which a multiply-linked regular file was already
// packed, and otherwise remembers rel as that name.
func (p *packer) firstName(rel string, st *syscall.Stat_t) (string, bool) {
	if st.Nlink < 2 {
		return "", false
	}
	id := fileID{uint64(st.Dev), st.Ino}
	if first, ok := p.links[id]; ok {
		return first, true
	}
	p.links[id] = rel
	return "", false
}

func (p *packer) write(h *tar.Header, full string) error {
	if err := p.tw.WriteHeader(h); err != nil {
		return err
	}
	p.stats.Entries++
	switch h.Typeflag {
	case tar.TypeLink:
		p.stats.HardLinks++
	case tar.TypeReg:
		n, err := copyFile(p.tw, full, h.Size)
		p.stats.Bytes += n
		return err
	}
	return nil
}

// copyFile copies exactly size bytes of the file at name to w: a file that changed
// size since it was stat'ed is an error, not a silently corrupt layer.
func copyFile(w io.Writer, name string, size int64) (int64, error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := io.CopyN(w, f, size)
	if err != nil {
		return n, fmt.Errorf("copying %d bytes: %w", size, err)
	}
	return n, nil
}

// addCapability records the file's capabilities, if it has any, as the PAX record tar
// and containerd use for extended attributes.
func addCapability(h *tar.Header, full string) error {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(full, capabilityXattr, buf)
	switch {
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP):
		return nil
	case err != nil:
		return fmt.Errorf("reading %s: %w", capabilityXattr, err)
	}
	h.PAXRecords = map[string]string{"SCHILY.xattr." + capabilityXattr: string(buf[:n])}
	return nil
}

func lstat(name string) (*syscall.Stat_t, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(name, &st); err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: name, Err: err}
	}
	return &st, nil
}
