package config

import (
	"os"
	"syscall"
)

// syscallNoFollow refuses a symlink as the secret file itself: the mode
// and owner checked must be the file's.
const syscallNoFollow = syscall.O_NOFOLLOW

func fileOwner(fi os.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}
