package vmpool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Claimed is a VM handed over by a pool: until Accept, the pool still
// stops it if this process goes away.
type Claimed struct {
	Handover
	// VMMPidfd and FileServerPidfds are pidfds of the VM's processes;
	// Files are the Starter's VM.Files. The caller owns them all.
	VMMPidfd         *os.File
	FileServerPidfds []*os.File
	Files            []*os.File
	conn             *net.UnixConn
}

// Claim asks the pool at socket for a VM of shape: nil without error when
// it has none idle (it starts some for the next claim).
func Claim(ctx context.Context, socket string, shape Shape) (_ *Claimed, retErr error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	conn := c.(*net.UnixConn)
	defer func() {
		if retErr != nil {
			conn.Close()
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	req, err := json.Marshal(request{Shape: shape})
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(append(req, '\n')); err != nil {
		return nil, fmt.Errorf("ask the VM pool: %w", err)
	}
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(maxFiles*4))
	n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("read the VM pool's answer: %w", err)
	}
	files, ferr := receivedFiles(oob[:oobn])
	cl := &Claimed{conn: conn}
	defer func() {
		if retErr != nil {
			closeFiles(files)
		}
	}()
	if ferr != nil {
		return nil, ferr
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		return nil, errors.New("the VM pool's answer was cut short")
	}
	if err := json.Unmarshal(buf[:n], &cl.Handover); err != nil {
		return nil, fmt.Errorf("the VM pool's answer: %w", err)
	}
	if !cl.Found {
		conn.Close()
		closeFiles(files)
		return nil, nil
	}
	want := 1 + len(cl.FileServers) + cl.FileCount
	if len(files) != want || cl.VMMPid <= 0 || cl.Dir == "" {
		return nil, fmt.Errorf("the VM pool handed over %d descriptors for %d, VMM pid %d, directory %q", len(files), want, cl.VMMPid, cl.Dir)
	}
	cl.VMMPidfd = files[0]
	cl.FileServerPidfds = files[1 : 1+len(cl.FileServers)]
	cl.Files = files[1+len(cl.FileServers):]
	return cl, nil
}

// receivedFiles are the descriptors of a message's control data.
func receivedFiles(oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("the VM pool's descriptors: %w", err)
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			closeFiles(files)
			return nil, fmt.Errorf("the VM pool's descriptors: %w", err)
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "vm-pool"))
		}
	}
	return files, nil
}

// Accept tells the pool the VM is this process's now.
func (c *Claimed) Accept() error {
	defer c.conn.Close()
	if _, err := c.conn.Write([]byte(accepted)); err != nil {
		return fmt.Errorf("tell the VM pool the VM was taken over: %w", err)
	}
	return nil
}

// Reject gives the VM back to the pool, which stops it, and closes the
// descriptors.
func (c *Claimed) Reject() {
	c.conn.Close()
	c.Close()
}

// Close closes the descriptors handed over.
func (c *Claimed) Close() {
	closeFiles(append(append([]*os.File{c.VMMPidfd}, c.FileServerPidfds...), c.Files...))
}
