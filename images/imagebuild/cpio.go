package imagebuild

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// This file is a small, deterministic writer for the SVR4 "newc" cpio format
// (magic 070701), the only format the kernel's initramfs unpacker reads.
//
// Why not a library: github.com/cavaliergopher/cpio (the maintained, dependency-free
// Go cpio package) reads newc well and is used by the tests to parse our output
// back, but its writer cannot set rdevmajor/rdevminor, so it cannot write the
// /dev/console character device the kernel opens for PID 1's stdio before any
// devtmpfs is mounted. u-root's cpio package can, but pulls a large module graph
// into a go.mod shared with the rest of the project. newc is a 110-byte ASCII
// header; the writer below is short and tested against an independent reader.

// Entry types for Archive entries.
const (
	typeDir  = 0o040000
	typeReg  = 0o100000
	typeChar = 0o020000
	typeLink = 0o120000
)

// newcMaxSize is the largest file newc can describe (32-bit hex size field).
const newcMaxSize = 1<<32 - 1

// Archive collects initramfs entries and writes them as a deterministic newc
// cpio archive: entries sorted by path, parent directories created explicitly,
// mtime 0, uid/gid 0, inode numbers assigned 1..n in output order, no
// checksums, trailer, and zero padding to a 512-byte boundary.
//
// Paths are given absolute ("/lib/modules/x.ko") and stored without the
// leading slash, as the kernel's own gen_init_cpio does.
type Archive struct {
	entries map[string]*archiveEntry
}

type archiveEntry struct {
	name         string // without leading slash
	mode         uint32 // type | permission bits
	data         []byte // file contents or symlink target
	rmaj, rmin   uint32 // device number for character devices
	explicitMode bool   // directory added by the caller, not implied by a child
}

// NewArchive returns an empty archive.
func NewArchive() *Archive {
	return &Archive{entries: map[string]*archiveEntry{}}
}

func cleanArchivePath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("cpio: path %q is not absolute", p)
	}
	c := path.Clean(p)
	if c == "/" {
		return "", fmt.Errorf("cpio: cannot add the root directory")
	}
	if c != p {
		return "", fmt.Errorf("cpio: path %q is not clean (want %q)", p, c)
	}
	return strings.TrimPrefix(c, "/"), nil
}

func (a *Archive) add(p string, e *archiveEntry) error {
	name, err := cleanArchivePath(p)
	if err != nil {
		return err
	}
	e.name = name
	if old, ok := a.entries[name]; ok {
		// Adding a directory twice (or over an implied parent) is fine.
		if old.mode&0o170000 == typeDir && e.mode&0o170000 == typeDir {
			if old.explicitMode && old.mode != e.mode {
				return fmt.Errorf("cpio: directory %q added with modes %o and %o", p, old.mode, e.mode)
			}
			a.entries[name] = e
			return nil
		}
		return fmt.Errorf("cpio: duplicate entry %q", p)
	}
	// Parents: created explicitly (mode 0755) unless the caller adds them.
	for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
		if pe, ok := a.entries[dir]; ok {
			if pe.mode&0o170000 != typeDir {
				return fmt.Errorf("cpio: %q needs parent %q, which is not a directory", p, "/"+dir)
			}
			continue
		}
		a.entries[dir] = &archiveEntry{name: dir, mode: typeDir | 0o755}
	}
	if e.mode&0o170000 != typeDir {
		// A non-directory cannot be a parent of anything already added.
		for other := range a.entries {
			if strings.HasPrefix(other, name+"/") {
				return fmt.Errorf("cpio: %q added as a file but %q is below it", p, "/"+other)
			}
		}
	}
	a.entries[name] = e
	return nil
}

// AddDir adds a directory with the given permission bits.
func (a *Archive) AddDir(p string, perm uint32) error {
	return a.add(p, &archiveEntry{mode: typeDir | perm&0o7777, explicitMode: true})
}

// AddFile adds a regular file with the given permission bits and contents.
func (a *Archive) AddFile(p string, perm uint32, data []byte) error {
	if int64(len(data)) > newcMaxSize {
		return fmt.Errorf("cpio: %s is %d bytes, more than newc can hold", p, len(data))
	}
	return a.add(p, &archiveEntry{mode: typeReg | perm&0o7777, data: data})
}

// AddSymlink adds a symbolic link to target.
func (a *Archive) AddSymlink(p, target string) error {
	if target == "" {
		return errors.New("cpio: empty symlink target")
	}
	return a.add(p, &archiveEntry{mode: typeLink | 0o777, data: []byte(target)})
}

// AddCharDev adds a character device node.
func (a *Archive) AddCharDev(p string, perm, major, minor uint32) error {
	return a.add(p, &archiveEntry{mode: typeChar | perm&0o7777, rmaj: major, rmin: minor})
}

// Names returns the stored entry names (no leading slash) in output order.
func (a *Archive) Names() []string {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	// Byte-wise order; a directory sorts before everything below it because a
	// string sorts before any string it is a proper prefix of.
	sort.Strings(names)
	return names
}

// WriteTo writes the archive. Identical entries always give identical bytes.
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	for i, name := range a.Names() {
		e := a.entries[name]
		nlink := uint32(1)
		if e.mode&0o170000 == typeDir {
			nlink = 2
		}
		h := newcHeader{
			ino:   uint32(i + 1),
			mode:  e.mode,
			nlink: nlink,
			size:  uint32(len(e.data)),
			rmaj:  e.rmaj,
			rmin:  e.rmin,
			name:  name,
		}
		if err := h.write(cw); err != nil {
			return cw.n, err
		}
		if _, err := cw.Write(e.data); err != nil {
			return cw.n, err
		}
		if err := pad(cw, 4); err != nil {
			return cw.n, err
		}
	}
	trailer := newcHeader{nlink: 1, name: "TRAILER!!!"}
	if err := trailer.write(cw); err != nil {
		return cw.n, err
	}
	// Pad to a 512-byte block like GNU cpio; the kernel skips zero padding, and
	// this keeps the image safe to concatenate with another archive.
	return cw.n, pad(cw, 512)
}

// Bytes returns the archive as a byte slice.
func (a *Archive) Bytes() []byte {
	var b bytes.Buffer
	_, _ = a.WriteTo(&b) // writing to a bytes.Buffer cannot fail
	return b.Bytes()
}

type newcHeader struct {
	ino, mode, nlink, size, rmaj, rmin uint32
	name                               string
}

func (h newcHeader) write(w *countingWriter) error {
	// c_magic c_ino c_mode c_uid c_gid c_nlink c_mtime c_filesize
	// c_devmajor c_devminor c_rdevmajor c_rdevminor c_namesize c_check
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		h.ino, h.mode, 0, 0, h.nlink, 0, h.size, 0, 0, h.rmaj, h.rmin, len(h.name)+1, 0)
	if _, err := io.WriteString(w, hdr); err != nil {
		return err
	}
	if _, err := io.WriteString(w, h.name+"\x00"); err != nil {
		return err
	}
	return pad(w, 4)
}

func pad(w *countingWriter, to int64) error {
	n := (to - w.n%to) % to
	if n == 0 {
		return nil
	}
	_, err := w.Write(make([]byte, n))
	return err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
