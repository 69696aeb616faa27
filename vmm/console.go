package vmm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// tailWindow bounds how much of a console log TailLines reads.
const tailWindow = 64 << 10

// TailLines returns the last n lines of a file (of its last tailWindow
// bytes), for error messages: a guest's console log says why it did not
// boot.
func TailLines(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(console log unreadable: %v)", err)
	}
	defer f.Close()
	var b []byte
	if fi, err := f.Stat(); err == nil && fi.Size() > tailWindow {
		b = make([]byte, tailWindow)
		n, err := f.ReadAt(b, fi.Size()-tailWindow)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Sprintf("(console log unreadable: %v)", err)
		}
		b = b[:n]
	} else if b, err = io.ReadAll(io.LimitReader(f, tailWindow)); err != nil {
		return fmt.Sprintf("(console log unreadable: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(bytes.ReplaceAll(b, []byte("\r"), nil)), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
