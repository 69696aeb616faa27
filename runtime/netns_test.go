package runtime

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A spec asking for a new network namespace without a path gets a fresh,
// pinned one: empty (only lo), no way out, and gone after Close.
func TestSpecNetNSCreatesEmptyNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("creating network namespaces needs root; the unit tests run as root (make unit)")
	}
	pin := filepath.Join(t.TempDir(), "netns")
	spec := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}}}}
	ns, err := specNetNS(spec, pin)
	if err != nil {
		t.Fatal(err)
	}
	if ns.Path() != pin {
		t.Fatalf("namespace path %q, want the pin %q", ns.Path(), pin)
	}
	empty, err := ns.empty()
	if err != nil || !empty {
		t.Fatalf("a fresh namespace should be empty: %v %v", empty, err)
	}
	if _, _, ok, err := ns.ipv4Link(); ok || err != nil {
		t.Fatalf("a fresh namespace has no default route: ok=%v err=%v", ok, err)
	}
	if _, err := ns.dial(context.Background(), "tcp", "192.0.2.1:80"); err == nil {
		t.Fatal("dialling out of an empty namespace must fail")
	}
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pin); !os.IsNotExist(err) {
		t.Fatalf("pin left after Close: %v", err)
	}

	// No network namespace in the spec: the host's, never empty.
	host, err := specNetNS(&specs.Spec{Linux: &specs.Linux{}}, pin)
	if err != nil {
		t.Fatal(err)
	}
	if empty, _ := host.empty(); empty || host.Path() != "" {
		t.Fatal("the host's namespace is not empty and has no path")
	}
}
