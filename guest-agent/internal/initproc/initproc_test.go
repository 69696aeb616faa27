package initproc

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRlimitResource(t *testing.T) {
	for name, want := range map[string]int{
		"RLIMIT_NOFILE": unix.RLIMIT_NOFILE,
		"RLIMIT_NPROC":  unix.RLIMIT_NPROC,
		"RLIMIT_CORE":   unix.RLIMIT_CORE,
		"RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
		"RLIMIT_AS":     unix.RLIMIT_AS,
	} {
		got, err := RlimitResource(name)
		if err != nil || got != want {
			t.Errorf("RlimitResource(%q) = %d, %v; want %d", name, got, err, want)
		}
	}
	for _, bad := range []string{"", "NOFILE", "rlimit_nofile", "RLIMIT_BOGUS"} {
		if _, err := RlimitResource(bad); err == nil {
			t.Errorf("RlimitResource(%q): no error", bad)
		}
	}
	if len(rlimits) != 16 {
		t.Errorf("%d rlimits mapped, Linux has 16", len(rlimits))
	}
}

func TestValidateRlimits(t *testing.T) {
	if err := ValidateRlimits([]Rlimit{{"RLIMIT_NOFILE", 1024, 1024}}); err != nil {
		t.Error(err)
	}
	err := ValidateRlimits([]Rlimit{{"RLIMIT_NOFILE", 10, 20}})
	if err == nil || !strings.Contains(err.Error(), "soft limit 20 exceeds hard limit 10") {
		t.Errorf("soft > hard: %v", err)
	}
	if err := ValidateRlimits([]Rlimit{{"RLIMIT_X", 1, 1}}); err == nil {
		t.Error("unknown name accepted")
	}
}

func TestMessageRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	um := uint32(0o027)
	in := Config{Rootfs: "/r", Args: []string{"sh", "-c", "echo hi"}, Umask: &um,
		Mounts: []Mount{{Source: "proc", Target: "/r/proc", Type: "proc", Flags: unix.MS_NOSUID}}}
	if err := WriteMessage(&buf, in); err != nil {
		t.Fatal(err)
	}
	buf.WriteByte(StartByte)
	var out Config
	if err := ReadMessage(&buf, &out); err != nil {
		t.Fatal(err)
	}
	if out.Rootfs != "/r" || len(out.Args) != 3 || *out.Umask != 0o027 || out.Mounts[0].Flags != unix.MS_NOSUID {
		t.Fatalf("round trip: %+v", out)
	}
	if b, _ := buf.ReadByte(); b != StartByte {
		t.Fatal("message read past its end")
	}
}
