//go:build integration

package integration

import (
	"os/exec"
	"strings"
	"testing"
)

// knownDifferences are outputs that differ from runc's on purpose or by the
// nature of a VM; docs/limits.md explains each. Anything else that differs
// fails the comparison.
var knownDifferences = map[string]string{
	"mounts": "the root file system is virtio-fs, not overlay, and the guest adds no host mounts",
}

// TestCompareWithRunc runs the same scenarios under runc and gondolin and
// diffs what the user sees.
func TestCompareWithRunc(t *testing.T) {
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatal("runc is not on PATH: `make tools` builds it into .cache/tools/bin")
	}
	scenarios := []struct {
		name  string
		flags []string
		cmd   []string
	}{
		{"exit code and output", nil, []string{"sh", "-c", "echo out; echo err >&2; exit 3"}},
		{"id", nil, []string{"id"}},
		{"id as user", []string{"--user", "1000:1000"}, []string{"id"}},
		{"ulimit -n", nil, []string{"sh", "-c", "ulimit -n; ulimit -Hn"}},
		{"hostname", []string{"--hostname", "cmp-host"}, []string{"hostname"}},
		{"capabilities", nil, []string{"sh", "-c", "grep ^Cap /proc/self/status"}},
		{"capabilities as user", []string{"--user", "1000"}, []string{"sh", "-c", "grep ^Cap /proc/self/status"}},
		{"pid 1", nil, []string{"sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $$"}},
		{"cwd and env", []string{"--cwd", "/tmp", "--env", "A=b c"}, []string{"sh", "-c", "pwd; echo \"$A\"; echo $PATH"}},
		{"dev nodes", nil, []string{"sh", "-c", "ls /dev | sort"}},
		{"read-only rootfs", []string{"--read-only"}, []string{"sh", "-c", "touch /x 2>/dev/null; echo $?"}},
		{"umask", nil, []string{"sh", "-c", "umask"}},
		{"mounts", nil, []string{"sh", "-c", "awk '{print $2, $3}' /proc/mounts | sort"}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			var got [2]result
			for i, rt := range []string{"io.containerd.runc.v2", runtimeName} {
				id := newID(t)
				args := append([]string{"run", "--rm", "--runtime", rt}, sc.flags...)
				args = append(append(args, testImage(t), id), sc.cmd...)
				got[i] = ctr(t, nil, args...)
			}
			same := got[0].code == got[1].code && got[0].stdout == got[1].stdout && got[0].stderr == got[1].stderr
			if same {
				return
			}
			if why, ok := knownDifferences[sc.name]; ok {
				t.Logf("known difference (%s):\nrunc:     %s\ngondolin: %s", why, got[0], got[1])
				return
			}
			t.Errorf("differs from runc:\nrunc:     %s\ngondolin: %s", got[0], strings.TrimSpace(got[1].String()))
		})
	}
}
