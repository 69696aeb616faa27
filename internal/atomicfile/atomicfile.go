// Package atomicfile writes a file so that a reader sees either its old
// content or the whole new one, never a part: the content goes to a temporary
// file in the same directory, is synced, and is renamed over the path.
//
// Not github.com/moby/sys/atomicwriter: its streaming writer renames whatever
// was written on Close unless a Write failed, so a producer that fails for
// another reason (a layer file shorter than recorded, a marshalling error)
// would leave a truncated file in place; Write here takes the producer's
// error into account.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write fills a new temporary file beside path with fill, gives it perm,
// syncs it and renames it over path. On an error the temporary file is
// removed and path is untouched.
func Write(path string, perm os.FileMode, fill func(w io.Writer) error) error {
	return write(path, perm, true, fill)
}

// WriteFileVolatile writes data to path as WriteFile does but without the
// sync: a reader still sees the old content or the whole new one if the
// writer dies, but a power loss may lose the new content. For state that
// does not outlive a reboot (under /run), written several times per
// operation, where a sync per write would cost milliseconds each.
func WriteFileVolatile(path string, data []byte, perm os.FileMode) error {
	return write(path, perm, false, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

func write(path string, perm os.FileMode, sync bool, fill func(w io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := fill(f); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if sync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", f.Name(), err)
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// WriteFile writes data to path as Write does.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return Write(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}
