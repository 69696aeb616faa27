package listeners

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

const tcp4 = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 037FA8C0:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
   3: 037FA8C0:0050 017FA8C0:D431 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
`

const tcp6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F93 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:1F94 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1 0000000000000000 100 0 0 10 0
   3: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8 1 0000000000000000 100 0 0 10 0
`

// udp4: a wildcard server on 53, one on the NIC's address on 5353, one on
// 127.0.0.1:161 (loopback), and a connected client socket on 40000.
const udp4 = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
    1: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 11 2 0000000000000000 0
    2: 037FA8C0:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 12 2 0000000000000000 0
    3: 0100007F:00A1 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 13 2 0000000000000000 0
    4: 037FA8C0:9C40 017FA8C0:0035 01 00000000:00000000 00:00000000 00000000     0        0 14 2 0000000000000000 0
`

func writeProc(t *testing.T, v4, v6 string) string {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "net"), 0o755)
	os.WriteFile(filepath.Join(root, "net/tcp"), []byte(v4), 0o644)
	if v6 != "" {
		os.WriteFile(filepath.Join(root, "net/tcp6"), []byte(v6), 0o644)
	}
	return root
}

func TestRead(t *testing.T) {
	s, err := Read(writeProc(t, tcp4, tcp6))
	if err != nil {
		t.Fatal(err)
	}
	// 80 (wildcard, v4 and v6, once), 8081 (the NIC's address), 8082
	// (v6 wildcard); not 8080 (127.0.0.1), 8083 (::1), 8084
	// (::ffff:127.0.0.1), nor the established connection.
	if want := []uint16{80, 8081, 8082}; !slices.Equal(s.TCP, want) || len(s.UDP) != 0 {
		t.Fatalf("Read = %v, want TCP %v", s, want)
	}
	if s.Generation() == (Set{}).Generation() || s.Generation() == 0 {
		t.Fatal("generations must differ and never be 0")
	}
	if s, err := Read(writeProc(t, tcp4, "")); err != nil || !slices.Equal(s.TCP, []uint16{80, 8081}) {
		t.Fatalf("without tcp6: %v %v", s, err)
	}
}

func TestReadUDP(t *testing.T) {
	root := writeProc(t, tcp4, "")
	os.WriteFile(filepath.Join(root, "net/udp"), []byte(udp4), 0o644)
	s, err := Read(root)
	if err != nil {
		t.Fatal(err)
	}
	// 53 and 5353; not the loopback server nor the connected client.
	if want := []uint16{53, 5353}; !slices.Equal(s.UDP, want) {
		t.Fatalf("UDP = %v, want %v", s.UDP, want)
	}
	// The same ports over TCP and UDP are different sets.
	if (Set{TCP: []uint16{53}}).Generation() == (Set{UDP: []uint16{53}}).Generation() {
		t.Fatal("TCP and UDP ports must not share a generation")
	}
}

func TestWait(t *testing.T) {
	root := writeProc(t, tcp4, "")
	s, _ := Read(root)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		time.Sleep(300 * time.Millisecond)
		// Replace the file at once, as the kernel's table changes: a
		// truncate-then-write could be read empty in between.
		tmp := filepath.Join(root, "net/tcp.new")
		os.WriteFile(tmp, []byte(tcp4[:indexLine(tcp4, 3)]), 0o644)
		os.Rename(tmp, filepath.Join(root, "net/tcp"))
	}()
	got, err := Wait(ctx, root, s.Generation())
	if err != nil || !slices.Equal(got.TCP, []uint16{80}) {
		t.Fatalf("Wait = %v, %v", got, err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, err := Wait(short, root, got.Generation()); err == nil {
		t.Fatal("an unchanged set must wait until the context ends")
	}
}

// indexLine returns the offset of line n (0 = header) of s.
func indexLine(s string, n int) int {
	off := 0
	for i := 0; i < n; i++ {
		off += len(s[off:][:indexNL(s[off:])+1])
	}
	return off
}

func indexNL(s string) int {
	for i := range s {
		if s[i] == '\n' {
			return i
		}
	}
	return len(s)
}
