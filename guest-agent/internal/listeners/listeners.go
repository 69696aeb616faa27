// Package listeners finds the ports the guest listens on, for the host to
// publish them (ingress): TCP sockets in LISTEN and unconnected bound UDP
// sockets. It reads /proc/net/{tcp,tcp6,udp,udp6}, which list every socket
// of the guest's (single) network namespace.
package listeners

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Socket states in /proc/net/{tcp,udp}: LISTEN, and CLOSE, which is what
// an unconnected UDP socket shows.
const (
	tcpListen   = "0A"
	udpUnconned = "07"
)

// Set is what the guest listens on: sorted, de-duplicated ports.
type Set struct {
	TCP []uint16
	UDP []uint16
}

// Generation identifies the set; never 0, so 0 can mean "none known".
func (s Set) Generation() uint64 {
	h := fnv.New64a()
	for _, p := range s.TCP {
		h.Write([]byte{byte(p >> 8), byte(p)})
	}
	h.Write([]byte("udp"))
	for _, p := range s.UDP {
		h.Write([]byte{byte(p >> 8), byte(p)})
	}
	g := h.Sum64()
	if g == 0 {
		g = 1
	}
	return g
}

// Read lists the ports listened on at a non-loopback address (a wildcard
// or the NIC's), from procRoot (normally /proc).
func Read(procRoot string) (Set, error) {
	tcp, err := readTables(procRoot, tcpListen, "net/tcp", "net/tcp6")
	if err != nil {
		return Set{}, err
	}
	udp, err := readTables(procRoot, udpUnconned, "net/udp", "net/udp6")
	if err != nil {
		return Set{}, err
	}
	return Set{TCP: tcp, UDP: udp}, nil
}

func readTables(procRoot, state string, names ...string) ([]uint16, error) {
	var ports []uint16
	for _, name := range names {
		f, err := os.Open(procRoot + "/" + name)
		if errors.Is(err, os.ErrNotExist) {
			continue // a kernel without IPv6 has no tcp6
		}
		if err != nil {
			return nil, err
		}
		p, err := parse(f, state)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		ports = append(ports, p...)
	}
	slices.Sort(ports)
	return slices.Compact(ports), nil
}

// parse reads one /proc/net table: the local ports of the sockets in
// state with no remote address, bound to a non-loopback address.
func parse(r io.Reader, state string) ([]uint16, error) {
	var ports []uint16
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != state {
			continue
		}
		addr, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			return nil, fmt.Errorf("bad local address %q", f[1])
		}
		// A connected UDP socket (a client's) is not a server.
		if _, remotePort, _ := strings.Cut(f[2], ":"); remotePort != "0000" {
			continue
		}
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("bad port in %q", f[1])
		}
		loop, err := loopback(addr)
		if err != nil {
			return nil, err
		}
		if !loop && port != 0 {
			ports = append(ports, uint16(port))
		}
	}
	return ports, sc.Err()
}

// loopback reports whether a /proc/net/tcp address (hex, in host byte
// order per 32-bit word) is a loopback address: 127/8 or ::1, and
// ::ffff:127/104.
func loopback(addr string) (bool, error) {
	b, err := hex.DecodeString(addr)
	if err != nil {
		return false, fmt.Errorf("bad address %q", addr)
	}
	switch len(b) {
	case 4:
		// Little-endian word: the first octet is the last byte.
		return b[3] == 127, nil
	case 16:
		words := [4][]byte{b[0:4], b[4:8], b[8:12], b[12:16]}
		zero := func(w []byte) bool { return w[0]|w[1]|w[2]|w[3] == 0 }
		// Each word is printed as the host-order (little-endian) value of
		// four address bytes, so its bytes appear reversed.
		if zero(words[0]) && zero(words[1]) && zero(words[2]) {
			// ::1: the last word's bytes 00 00 00 01 print as 01000000.
			return words[3][0] == 1 && words[3][1] == 0 && words[3][2] == 0 && words[3][3] == 0, nil
		}
		// ::ffff:a.b.c.d: bytes 00 00 ff ff print as FFFF0000, and a is
		// the last byte of the last word.
		if zero(words[0]) && zero(words[1]) && words[2][0] == 0xff && words[2][1] == 0xff && words[2][2] == 0 && words[2][3] == 0 {
			return words[3][3] == 127, nil
		}
		return false, nil
	}
	return false, fmt.Errorf("bad address length %q", addr)
}

// pollInterval is how often Wait looks again: a new listener is published
// within about this long.
const pollInterval = 100 * time.Millisecond

// Wait returns the set once its generation differs from known, or ctx's
// error.
func Wait(ctx context.Context, procRoot string, known uint64) (Set, error) {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		s, err := Read(procRoot)
		if err != nil {
			return Set{}, err
		}
		if s.Generation() != known {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return Set{}, ctx.Err()
		case <-t.C:
		}
	}
}
