package listeners

import (
	"strings"
	"testing"
)

// FuzzParse reads arbitrary /proc/net tables: no panic, and every port
// reported is a real one (not 0).
func FuzzParse(f *testing.F) {
	f.Add(tcp4, tcpListen)
	f.Add(tcp6, tcpListen)
	f.Add(udp4, udpUnconned)
	f.Add("h\n 0: 0000:0050 0:0000 0A\n 1: zz:0050 0:0000 0A\n", tcpListen)
	f.Add("h\n 0: 00000000000000000000000001000000:FFFF 0:0000 07\n", udpUnconned)
	f.Fuzz(func(t *testing.T, table, state string) {
		ports, err := parse(strings.NewReader(table), state)
		if err != nil {
			return
		}
		for _, p := range ports {
			if p == 0 {
				t.Fatalf("port 0 reported from %q", table)
			}
		}
	})
}
