package channel

import (
	"testing"

	"github.com/hashicorp/yamux"
)

func TestYamuxConfigWindow(t *testing.T) {
	cfg := YamuxConfig()
	if err := yamux.VerifyConfig(cfg); err != nil {
		t.Fatalf("agent yamux config is invalid: %v", err)
	}
	if cfg.MaxStreamWindowSize != MaxStreamWindow {
		t.Fatalf("MaxStreamWindowSize = %d, want %d", cfg.MaxStreamWindowSize, MaxStreamWindow)
	}
}
