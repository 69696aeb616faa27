package initproc

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// The byte that carries a prestarted init's stdio says whether fd 0 is a
// terminal that must become its controlling terminal.
const (
	stdioPipes    = 'p'
	stdioTerminal = 't'
)

// SendStdio hands a prestarted init its stdin, stdout and stderr over the
// sync socket (SCM_RIGHTS). With terminal, stdio[0] is the terminal that
// becomes its controlling terminal.
func SendStdio(sock int, stdio [3]int, terminal bool) error {
	b := []byte{stdioPipes}
	if terminal {
		b[0] = stdioTerminal
	}
	for {
		err := unix.Sendmsg(sock, b, unix.UnixRights(stdio[:]...), nil, 0)
		if err != unix.EINTR {
			return err
		}
	}
}

// ReceiveStdio reads what SendStdio sent: three new descriptors, for the
// caller to move to 0, 1 and 2.
func ReceiveStdio(sock int) (stdio [3]int, terminal bool, err error) {
	var b [1]byte
	oob := make([]byte, unix.CmsgSpace(4*len(stdio)))
	var n, oobn int
	for {
		n, oobn, _, _, err = unix.Recvmsg(sock, b[:], oob, unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return stdio, false, fmt.Errorf("receive stdio: %w", err)
	}
	if n != 1 {
		return stdio, false, fmt.Errorf("receive stdio: the agent closed the socket")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return stdio, false, fmt.Errorf("receive stdio: %w", err)
	}
	var fds []int
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		fds = append(fds, got...)
	}
	if len(fds) != len(stdio) || (b[0] != stdioPipes && b[0] != stdioTerminal) {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return stdio, false, fmt.Errorf("receive stdio: got %d descriptors with tag %q, want 3 with %q or %q", len(fds), b[0], stdioPipes, stdioTerminal)
	}
	copy(stdio[:], fds)
	return stdio, b[0] == stdioTerminal, nil
}

// takeStdio makes the descriptors ReceiveStdio got the process's 0, 1 and
// 2, and a terminal its controlling terminal (it leads its own session).
func takeStdio(stdio [3]int, terminal bool) error {
	for i, fd := range stdio {
		// Received descriptors are above the sync socket (fd 3), so
		// none of them is already in place.
		if err := unix.Dup3(fd, i, 0); err != nil {
			return fmt.Errorf("dup stdio to %d: %w", i, err)
		}
	}
	for _, fd := range stdio {
		unix.Close(fd)
	}
	if terminal {
		if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
			return fmt.Errorf("make the terminal the controlling terminal: %w", err)
		}
	}
	return nil
}
