package vmm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// A VM snapshot is the saved state of a VM booted once, with the agent ready
// and waiting for its host, and nothing of any container in it yet: no
// share mounted, no network configured. A VM of the same configuration
// resumes from it instead of booting; its sockets, console and file servers
// are its own (the shares are mounted after the restore, from the new
// container's file servers). The saved state is a file per configuration in
// snapshot_dir, named by a digest of everything that shapes the guest.

// snapshotTimeout bounds the boot and save of a new snapshot.
const snapshotTimeout = 2 * time.Minute

// fileStamp identifies a file's version by path, size and modification time.
type fileStamp struct {
	Path  string
	Size  int64
	MTime int64
}

func stampFile(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{path, st.Size(), st.ModTime().UnixNano()}, nil
}

// snapshotKey digests what the guest's saved state depends on: the binaries
// and images (by path, size and modification time), the VM's size and
// devices and the kernel command line. Socket paths, console and ID are the
// restored VM's own and are left out. It also returns the stamps of those
// files: once one of them changes, no VM will resume from that state again.
func snapshotKey(b Backend, fsd *Virtiofsd, cfg Config) (string, []fileStamp, error) {
	vmmPath, err := b.Binary()
	if err != nil {
		return "", nil, err
	}
	var k struct {
		// VMM keeps the name it had when QEMU was the only VMM, so that
		// the keys of the states already saved stay the same.
		VMM                       fileStamp `json:"QEMU"`
		Virtiofsd, Kernel, Initrd fileStamp
		KernelArgs                []string
		MemoryMiB                 uint64
		CPUs                      uint32
		Accel, Machine, Channel   string
		ShareTags                 []string
		NIC                       bool
		MAC                       string
		MTU                       int
		// Layout is snapshotLayout: states saved with another
		// command line layout are not resumed.
		Layout int `json:",omitempty"`
	}
	for _, f := range []struct {
		dst  *fileStamp
		path string
	}{{&k.VMM, vmmPath}, {&k.Virtiofsd, fsd.Path}, {&k.Kernel, cfg.Kernel}, {&k.Initrd, cfg.Initrd}} {
		if *f.dst, err = stampFile(f.path); err != nil {
			return "", nil, err
		}
	}
	k.KernelArgs, k.MemoryMiB, k.CPUs = cfg.KernelArgs, cfg.MemoryMiB, cfg.CPUs
	k.Layout = snapshotLayout
	k.Accel, k.Machine, k.Channel = string(cfg.Accelerator), string(cfg.Machine), cfg.ChannelName
	for _, s := range cfg.Shares {
		k.ShareTags = append(k.ShareTags, s.Tag)
	}
	if cfg.NIC != nil {
		k.NIC, k.MAC, k.MTU = true, cfg.NIC.MAC.String(), cfg.NIC.MTU
	}
	j, err := json.Marshal(k)
	if err != nil {
		return "", nil, err
	}
	sum := sha256.Sum256(j)
	return hex.EncodeToString(sum[:12]), []fileStamp{k.VMM, k.Virtiofsd, k.Kernel, k.Initrd}, nil
}

// snapshotLayout versions the backends' command line where a saved state
// depends on it beyond the key's other fields: 2 gave the agent channel's
// port an id.
const snapshotLayout = 2

// ErrSnapshotUnsupported marks a VMM or virtiofsd that cannot save a VM:
// a VM whose snapshot is not Required then boots quietly.
var ErrSnapshotUnsupported = errors.New("this QEMU and virtiofsd cannot save a VM")

// ensureSnapshot returns the saved state for cfg, booting and saving a VM
// first when there is none. Concurrent shims wait for the one that builds
// it. A build that failed leaves KEY.error, and a VMM that cannot save
// (a QEMU too old) leaves KEY.unsupported: later calls return at once without trying again,
// for snapshotRetryAfter after an error and for good when unsupported
// (delete the file to retry sooner).
func ensureSnapshot(ctx context.Context, dir string, b Backend, fsd *Virtiofsd, cfg Config) (string, error) {
	if err := fsd.CanSaveState(); err != nil {
		return "", fmt.Errorf("%w: %w", ErrSnapshotUnsupported, err)
	}
	key, inputs, err := snapshotKey(b, fsd, cfg)
	if err != nil {
		return "", fmt.Errorf("snapshot key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	base := filepath.Join(dir, key)
	state := base + ".state"
	if found, err := savedState(base); found != "" || err != nil {
		return found, err
	}
	lock, err := os.OpenFile(base+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	if found, err := savedState(base); found != "" || err != nil {
		return found, err // built (or given up on) while this shim waited
	}
	// A new key is what an upgrade of QEMU, virtiofsd or the guest image
	// leads to: the states those files no longer match are removed, and
	// the least recently used beyond maxSnapshots.
	pruneSnapshots(ctx, dir)
	if err := writeInputs(base+inputsExt, inputs); err != nil {
		return "", err
	}
	if err := b.CanSaveState(ctx); err != nil {
		_ = os.WriteFile(base+".unsupported", []byte(err.Error()), 0o600)
		return "", fmt.Errorf("%w: %w", ErrSnapshotUnsupported, err)
	}
	start := time.Now()
	if err := buildSnapshot(ctx, b, fsd, cfg, state); err != nil {
		_ = os.WriteFile(base+".error", []byte(err.Error()), 0o600)
		return "", err
	}
	_ = os.Remove(base + ".error") // of an earlier attempt
	log.G(ctx).WithFields(log.Fields{"state": state, "ms": time.Since(start).Milliseconds()}).Info("saved a VM snapshot")
	return state, nil
}

// savedState returns base's state file, or the record of why there is
// none as an error, or neither. A state found is marked used now (pruning
// keeps the recently used ones).
func savedState(base string) (string, error) {
	now := time.Now()
	if err := os.Chtimes(base+".state", now, now); err == nil {
		return base + ".state", nil
	}
	if msg, err := os.ReadFile(base + ".unsupported"); err == nil {
		return "", fmt.Errorf("%w: %s", ErrSnapshotUnsupported, msg)
	}
	if st, err := os.Stat(base + ".error"); err == nil {
		retry := st.ModTime().Add(snapshotRetryAfter)
		if time.Now().Before(retry) {
			msg, _ := os.ReadFile(base + ".error")
			return "", fmt.Errorf("an earlier attempt failed (tried again after %s, or remove %s.error): %s", retry.UTC().Format(time.RFC3339), base, msg)
		}
	}
	return "", nil
}

// snapshotRetryAfter is how long a failure to make or load a snapshot
// keeps VMs of its shape booting: the cause may pass (a full disk, a host
// too loaded to boot the VM within snapshotTimeout).
const snapshotRetryAfter = time.Hour

// buildSnapshot boots a VM like cfg whose file servers export an empty
// directory and whose NIC goes nowhere, waits until its agent has opened
// the channel, and saves its state to path.
func buildSnapshot(ctx context.Context, b Backend, fsd *Virtiofsd, cfg Config, path string) error {
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	// Short: unix socket paths in it must fit 108 bytes.
	dir, err := os.MkdirTemp(filepath.Dir(path), ".b")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	tcfg := cfg
	tcfg.ID = "snapshot-" + filepath.Base(path)
	tcfg.StateDir = dir
	// It writes its own console log, and runs in the caller's cgroup:
	// no container's.
	tcfg.ConsoleLog = filepath.Join(dir, "console.log")
	tcfg.ConsoleSocket = ""
	tcfg.Started = nil
	tcfg.ChannelSocket = filepath.Join(dir, "channel.sock")
	tcfg.Incoming = ""
	var stop func()
	tcfg.Shares, tcfg.NIC, stop, err = blankDevices(ctx, fsd, cfg, dir)
	defer stop()
	if err != nil {
		return err
	}
	vm, err := b.Start(ctx, tcfg)
	if err != nil {
		return fmt.Errorf("boot the VM to snapshot: %w", err)
	}
	defer vm.Stop(context.WithoutCancel(ctx), 0)
	saver, ok := vm.(Saver)
	if !ok {
		return fmt.Errorf("%w: its VMs cannot be saved", ErrSnapshotUnsupported)
	}
	if err := saver.WaitChannelOpen(ctx); err != nil {
		return fmt.Errorf("VM to snapshot: %w; last lines of its console:\n%s", err, TailLines(tcfg.ConsoleLog, 15))
	}
	tmp := filepath.Join(dir, "state")
	if err := saver.SaveState(ctx, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// blankDevices starts in dir the host ends of the devices of a VM like cfg
// that holds no container: a file server of an empty directory for each
// share, and a NIC whose frames go nowhere. stop ends them, also after an
// error.
func blankDevices(ctx context.Context, fsd *Virtiofsd, cfg Config, dir string) (shares []Share, nic *NIC, stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, s := range stops {
			s()
		}
	}
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		return nil, nil, stop, err
	}
	for i, s := range cfg.Shares {
		fs, err := fsd.StartFileServer(ctx, empty, Share{Tag: s.Tag, Socket: filepath.Join(dir, fmt.Sprintf("fs%d.sock", i))})
		if err != nil {
			return nil, nil, stop, err
		}
		stops = append(stops, fs.Stop)
		shares = append(shares, Share{Tag: s.Tag, Socket: fs.Socket()})
	}
	if cfg.NIC != nil {
		n := *cfg.NIC
		n.Socket = filepath.Join(dir, "net.sock")
		l, err := net.Listen("unix", n.Socket)
		if err != nil {
			return nil, nil, stop, err
		}
		stops = append(stops, func() { l.Close() })
		go discardFrames(l)
		nic = &n
	}
	return shares, nic, stop, nil
}

// discardFrames takes the one connection of a snapshot VM's NIC and reads
// whatever the guest sends until it closes.
func discardFrames(l net.Listener) {
	c, err := l.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	_, _ = io.Copy(io.Discard, c)
}

// discardSnapshot sets aside a saved state that failed to load: it is
// removed and its error recorded, so that later starts boot at once.
func discardSnapshot(state string, loadErr error) {
	base := state[:len(state)-len(filepath.Ext(state))]
	_ = os.WriteFile(base+".error", []byte("loading the saved state failed: "+loadErr.Error()), 0o600)
	_ = os.Remove(state)
}

// inputsExt names the file beside each saved state that lists the files
// its key was made from (JSON fileStamps), for pruneSnapshots.
const inputsExt = ".inputs"

func writeInputs(path string, inputs []fileStamp) error {
	b, err := json.Marshal(inputs)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// maxSnapshots bounds the saved states kept (~40 MB each on disk): one per
// VM shape, and containers with many different memory limits make many.
const maxSnapshots = 8

// pruneSnapshots removes from dir every saved state (and the files beside
// it) whose inputs have changed or gone: no key can lead to it again. States
// saved without an inputs file are left to the least-recently-used bound,
// maxSnapshots, applied next. It also removes build directories a killed
// shim left behind.
func pruneSnapshots(ctx context.Context, dir string) {
	defer pruneLeastUsed(ctx, dir, maxSnapshots-1) // room for the one being made
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() && strings.HasPrefix(name, ".b") {
			// Builds in progress are younger than snapshotTimeout.
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > 2*snapshotTimeout {
				_ = os.RemoveAll(filepath.Join(dir, name))
			}
			continue
		}
		base, ok := strings.CutSuffix(name, inputsExt)
		if !ok {
			continue
		}
		stale, why := inputsChanged(filepath.Join(dir, name))
		if !stale {
			continue
		}
		removeSnapshot(dir, base)
		log.G(ctx).WithFields(log.Fields{"snapshot": base, "reason": why}).Info("removed a VM snapshot no VM can resume from")
	}
}

// removeSnapshot removes key base's state and every file beside it.
func removeSnapshot(dir, base string) {
	for _, ext := range []string{".state", ".error", ".unsupported", ".lock", inputsExt} {
		_ = os.Remove(filepath.Join(dir, base+ext))
	}
}

// pruneLeastUsed keeps the keep most recently used states in dir (each use
// sets a state's modification time) and removes the others.
func pruneLeastUsed(ctx context.Context, dir string, keep int) {
	states, _ := filepath.Glob(filepath.Join(dir, "*.state"))
	if len(states) <= keep {
		return
	}
	used := map[string]time.Time{}
	for _, s := range states {
		if st, err := os.Stat(s); err == nil {
			used[s] = st.ModTime()
		}
	}
	slices.SortFunc(states, func(a, b string) int { return used[b].Compare(used[a]) })
	for _, s := range states[keep:] {
		base := strings.TrimSuffix(filepath.Base(s), ".state")
		removeSnapshot(dir, base)
		log.G(ctx).WithFields(log.Fields{"snapshot": base, "reason": fmt.Sprintf("only the %d most recently used are kept", keep)}).Info("removed a VM snapshot")
	}
}

// inputsChanged reports whether a file listed in an inputs file changed or
// is gone, and which. An unreadable inputs file counts as changed.
func inputsChanged(path string) (bool, string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return true, err.Error()
	}
	var inputs []fileStamp
	if err := json.Unmarshal(b, &inputs); err != nil {
		return true, fmt.Sprintf("%s: %v", path, err)
	}
	for _, in := range inputs {
		now, err := stampFile(in.Path)
		if err != nil {
			return true, err.Error()
		}
		if now != in {
			return true, in.Path + " changed"
		}
	}
	return false, ""
}
