// Package listeners finds the TCP ports the guest listens on, for the host
// to publish them (ingress). It reads /proc/net/tcp and /proc/net/tcp6,
// which list every socket of the guest's (single) network namespace.
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

// tcpListen is the LISTEN state in /proc/net/tcp.
const tcpListen = "0A"

// Set is the sorted, de-duplicated list of listening ports.
type Set []uint16

// Generation identifies the set; never 0, so 0 can mean "none known".
func (s Set) Generation() uint64 {
	h := fnv.New64a()
	for _, p := range s {
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
	var ports []uint16
	for _, name := range []string{"net/tcp", "net/tcp6"} {
		f, err := os.Open(procRoot + "/" + name)
		if errors.Is(err, os.ErrNotExist) {
			continue // a kernel without IPv6 has no tcp6
		}
		if err != nil {
			return nil, err
		}
		p, err := parse(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		ports = append(ports, p...)
	}
	slices.Sort(ports)
	return Set(slices.Compact(ports)), nil
}

// parse reads one /proc/net/tcp{,6} table.
func parse(r io.Reader) ([]uint16, error) {
	var ports []uint16
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != tcpListen {
			continue
		}
		addr, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			return nil, fmt.Errorf("bad local address %q", f[1])
		}
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("bad port in %q", f[1])
		}
		loop, err := loopback(addr)
		if err != nil {
			return nil, err
		}
		if !loop {
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
			return nil, err
		}
		if s.Generation() != known {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}
