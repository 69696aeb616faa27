package policy

import (
	"context"
	"io"
	"net"
)

// relay copies both ways until both directions are done or the network
// closes.
func (n *Network) relay(guest, up net.Conn) {
	done := make(chan struct{})
	stop := context.AfterFunc(n.ctx, func() {
		guest.Close()
		up.Close()
	})
	defer stop()
	go func() {
		copyHalf(up, guest)
		close(done)
	}()
	copyHalf(guest, up)
	<-done
	guest.Close()
	up.Close()
}

type closeWriter interface{ CloseWrite() error }

func copyHalf(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if cw, ok := dst.(closeWriter); ok && err == nil {
		cw.CloseWrite()
	} else {
		dst.Close()
		src.Close()
	}
}
