package service

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"

	"github.com/earendil-works/gondolin-containerd/guest-agent/api"
)

// Restored hands the host's time and entropy to the clock and the random
// number generator, and reports which of the two failed.
func TestRestored(t *testing.T) {
	var gotTime time.Time
	var gotEntropy []byte
	s := &Service{
		SetClock:   func(t time.Time) error { gotTime = t; return nil },
		AddEntropy: func(b []byte) error { gotEntropy = b; return nil },
	}
	now := time.Unix(1795000000, 123456789)
	entropy := make([]byte, 32)
	entropy[0] = 7
	if _, err := s.Restored(context.Background(), &api.RestoredRequest{UnixNanos: now.UnixNano(), Entropy: entropy}); err != nil {
		t.Fatal(err)
	}
	if !gotTime.Equal(now) || len(gotEntropy) != 32 || gotEntropy[0] != 7 {
		t.Fatalf("clock %v, entropy %v", gotTime, gotEntropy)
	}

	s.AddEntropy = func([]byte) error { return errors.New("16 bytes of entropy: at least 32") }
	_, err := s.Restored(context.Background(), &api.RestoredRequest{UnixNanos: now.UnixNano()})
	if !errdefs.IsInvalidArgument(errgrpc.ToNative(err)) {
		t.Fatalf("short entropy: want InvalidArgument, got %v", err)
	}
	if _, err := (&Service{}).Restored(context.Background(), &api.RestoredRequest{}); !errdefs.IsNotImplemented(errgrpc.ToNative(err)) {
		t.Fatalf("without hooks: want Unimplemented, got %v", err)
	}
}
