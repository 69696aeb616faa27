package container

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func makeCgroup(path string) error {
	err := os.Mkdir(path, 0o755)
	if errors.Is(err, os.ErrExist) {
		// Left over from an earlier container with this id.
		if rerr := removeCgroup(path); rerr == nil {
			err = os.Mkdir(path, 0o755)
		}
	}
	if err != nil {
		return fmt.Errorf("create cgroup %s: %w", path, err)
	}
	return nil
}

// cgroupPids lists the processes of a cgroup.
func cgroupPids(path string) ([]int, error) {
	b, err := os.ReadFile(path + "/cgroup.procs")
	if err != nil {
		return nil, err
	}
	return parsePids(string(b)), nil
}

func parsePids(s string) []int {
	var pids []int
	for _, f := range strings.Fields(s) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// signalCgroup signals every process of the cgroup (cgroup.kill for
// SIGKILL when the kernel has it).
func signalCgroup(path string, sig unix.Signal) error {
	if sig == unix.SIGKILL {
		if err := os.WriteFile(path+"/cgroup.kill", []byte("1"), 0); err == nil {
			return nil
		}
	}
	pids, err := cgroupPids(path)
	if err != nil {
		return fmt.Errorf("list processes of %s: %w", path, err)
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("signal %d to pid %d: %w", sig, pid, err)
		}
	}
	return nil
}

// killCgroup SIGKILLs everything in the cgroup and waits up to timeout for
// it to be empty. A missing cgroup is empty.
func killCgroup(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids, err := cgroupPids(path)
		if errors.Is(err, os.ErrNotExist) || (err == nil && len(pids) == 0) {
			return nil
		}
		if err != nil {
			return err
		}
		_ = signalCgroup(path, unix.SIGKILL)
		if !time.Now().Before(deadline) {
			return fmt.Errorf("cgroup %s still has processes %v", path, pids)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func removeCgroup(path string) error {
	var err error
	for i := 0; i < 100; i++ {
		err = unix.Rmdir(path)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", path, err)
}
