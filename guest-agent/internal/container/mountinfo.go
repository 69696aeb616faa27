package container

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"
)

// MountEntry is one line of /proc/self/mountinfo.
type MountEntry struct {
	Target string
	FSType string
	Source string
}

// ParseMountinfo reads /proc/<pid>/mountinfo in its order (parents before
// the mounts on top of them).
func ParseMountinfo(r io.Reader) ([]MountEntry, error) {
	var out []MountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 7 {
			continue
		}
		e := MountEntry{Target: unescape(f[4])}
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				if i+2 < len(f) {
					e.FSType = f[i+1]
					e.Source = unescape(f[i+2])
				}
				break
			}
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for space, ...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountsUnder returns the mount points at or below dir, innermost (most
// recently mounted) first: the order to unmount them in.
func MountsUnder(entries []MountEntry, dir string) []string {
	var out []string
	for i := len(entries) - 1; i >= 0; i-- {
		t := entries[i].Target
		if t == dir || strings.HasPrefix(t, dir+"/") {
			out = append(out, t)
		}
	}
	return out
}

func readMountinfo() ([]MountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseMountinfo(f)
}
