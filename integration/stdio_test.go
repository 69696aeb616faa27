//go:build integration

package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// stdioRoundTripShimPeak bounds the shim's peak resident memory while a
// GiB goes through a container's stdin and comes back on its stdout: the
// stream's windows (1 MiB each way), frame buffers and copies, over a shim
// of ~30 MiB. A shim that held what the guest or ctr had not taken yet
// would pass it within the first hundred MiB.
const stdioRoundTripShimPeak = 128 << 20

// TestStdioRoundTripGiB sends 1 GiB to a container's stdin while reading
// it back from its stdout (dd in the guest copies one to the other),
// both at full speed at once: every byte comes back, in order (the sha256
// of what came back is that of what was sent), and the shim's memory stays
// bounded throughout.
func TestStdioRoundTripGiB(t *testing.T) {
	const size = 1 << 30
	id := newID(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// A count: ctr does not close the stdin FIFO at the end of its input
	// (nor with runc), so the guest reads exactly what it was sent. dd,
	// not busybox's head -c, which took 3 minutes for the GiB.
	args := withBootPathConfig(mergeBootPathConfig(t, []string{"run", "--rm", "--runtime", runtimeName, testImage(t), id,
		"dd", "bs=1048576", fmt.Sprintf("count=%d", size>>20), "iflag=fullblock"}))
	cmd := exec.CommandContext(ctx, "ctr", args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { assertNoLeftovers(t, id) })

	var wg sync.WaitGroup
	var sent []byte
	var sendErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer stdin.Close()
		h := sha256.New()
		src := rand.NewChaCha8([32]byte{'g', 'o', 'n', 'd', 'o', 'l', 'i', 'n'})
		_, sendErr = io.CopyN(io.MultiWriter(stdin, h), src, size)
		sent = h.Sum(nil)
	}()
	peak := make(chan int64, 1)
	stopSampling := make(chan struct{})
	go func() { peak <- sampleShimPeak(id, stopSampling) }()

	h := sha256.New()
	got, readErr := io.Copy(h, stdout)
	wg.Wait()
	waitErr := cmd.Wait()
	close(stopSampling)
	shimPeak := <-peak
	elapsed := time.Since(started)
	if sendErr != nil || readErr != nil || waitErr != nil {
		t.Fatalf("send: %v, read: %v, ctr: %v; stderr: %s", sendErr, readErr, waitErr, stderr.String())
	}
	if got != size || !bytes.Equal(h.Sum(nil), sent) {
		t.Fatalf("got %d of %d bytes back, sha256 %s; sent sha256 %s", got, size, hex.EncodeToString(h.Sum(nil)), hex.EncodeToString(sent))
	}
	if shimPeak == 0 {
		t.Fatal("never found the shim's memory figures: its process was not seen")
	}
	if shimPeak > stdioRoundTripShimPeak {
		t.Errorf("the shim's peak resident memory was %d MiB, past %d MiB", shimPeak>>20, stdioRoundTripShimPeak>>20)
	}
	t.Logf("1 GiB each way in %s (with the start), shim peak RSS %d MiB", elapsed.Round(time.Millisecond), shimPeak>>20)
}

// sampleShimPeak follows the shim of container id until stop is closed
// and returns the highest peak resident memory (VmHWM) it read from it, 0
// if it never found the shim.
func sampleShimPeak(id string, stop <-chan struct{}) int64 {
	var peak int64
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	pid := 0
	for {
		if pid == 0 {
			pid = findProcess(isShimOf(id))
		}
		if pid != 0 {
			if st, err := procStatusKiB(pid); err == nil && st["VmHWM"]<<10 > peak {
				peak = st["VmHWM"] << 10
			}
		}
		select {
		case <-stop:
			return peak
		case <-tick.C:
		}
	}
}
