package harness

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/earendil-works/gondolin-containerd/bench/report"
)

// The containerd log lines the start phases come from. containerd logs
// "creating task" (debug) with the container's id before it starts the
// shim; the gondolin shim logs, in that create, "guest agent ready" (info,
// the VM's steps, without the container's id), then "container created"
// and, in the start, "container started" (debug, with container=<id>).
// Each step is a field <name>_ms.
const (
	msgCreatingTask = "creating task"
	msgAgentReady   = "guest agent ready"
	msgCreated      = "container created"
	msgStarted      = "container started"
)

// guestReadyField is the one *_ms field of "guest agent ready" that is not a
// host step: the guest's own uptime when its agent was ready.
const guestReadyField = "guest_ready"

// Why a run has no phases of a kind (report.StartRun.Missing). No container
// ids: equal reasons are counted together.
const (
	missingCreated = `no "container created" line (the shim logs it at debug level: containerd's log level must be debug)`
	missingStarted = `no "container started" line (the shim logs it at debug level: containerd's log level must be debug)`
	missingTask    = `no "creating task" line from containerd (logged at debug level), so the VM's "guest agent ready" line (which has no container id) cannot be told apart`
	missingReady   = `no "guest agent ready" line between containerd's "creating task" and the shim's "container created"`
	ambiguousReady = `more than one "guest agent ready" line between containerd's "creating task" and the shim's "container created" (another VM started meanwhile): the VM's steps cannot be attributed`
)

// parseLogfmt splits a logrus text line (key=value, values with spaces or
// quotes Go-quoted) into its fields.
func parseLogfmt(line string) (map[string]string, error) {
	out := map[string]string{}
	for i := 0; i < len(line); {
		if line[i] == ' ' {
			i++
			continue
		}
		rest := line[i:]
		eq := strings.IndexByte(rest, '=')
		if sp := strings.IndexByte(rest, ' '); eq <= 0 || (sp >= 0 && sp < eq) {
			word, _, _ := strings.Cut(rest, " ")
			return nil, fmt.Errorf("at byte %d: %q is not key=value", i, word)
		}
		key := rest[:eq]
		rest = rest[eq+1:]
		i += eq + 1
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil, fmt.Errorf("value of %s at byte %d: unterminated or malformed quoted string", key, i)
			}
			v, err := strconv.Unquote(q)
			if err != nil {
				return nil, fmt.Errorf("value of %s at byte %d: %w", key, i, err)
			}
			out[key] = v
			i += len(q)
			continue
		}
		v, _, _ := strings.Cut(rest, " ")
		out[key] = v
		i += len(v)
	}
	return out, nil
}

// msFields are a line's *_ms fields, by name without the suffix.
func msFields(fields map[string]string) (map[string]float64, error) {
	out := map[string]float64{}
	for k, v := range fields {
		name, ok := strings.CutSuffix(k, "_ms")
		if !ok || name == "" {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, fmt.Errorf("field %s=%q is not a number of milliseconds", k, v)
		}
		out[name] = f
	}
	return out, nil
}

// ShimPhases is what the shim logged about one container's start (the
// phase fields of report.StartRun).
type ShimPhases struct {
	Boot         string
	VM           map[string]float64
	GuestReadyMs *float64
	Create       map[string]float64
	Start        map[string]float64
	Missing      []string
}

// shimLog is the state of one wanted container while the log is read.
type shimLog struct {
	phases ShimPhases
	// open: between its "creating task" and its "container created".
	open    bool
	sawTask bool
	readies []map[string]string
}

// ReadShimPhases reads containerd's log and returns, for each of ids, the
// phases the gondolin shim logged for that container. The VM's line carries
// no container id: it is the container's when it is the only "guest agent
// ready" line between containerd's "creating task" for the container and the
// shim's "container created" for it (the shim logs it in that create, before
// "container created"; a second line there is another VM's, and then the VM
// steps are left out). problems lists lines with a phase message that could
// not be read.
func ReadShimPhases(r io.Reader, ids []string) (phases map[string]*ShimPhases, problems []string, err error) {
	st := make(shimLogs, len(ids))
	for _, id := range ids {
		st[id] = &shimLog{}
	}
	br := bufio.NewReaderSize(r, 1<<16)
	for n := 1; ; n++ {
		line, rerr := br.ReadString('\n')
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return nil, nil, fmt.Errorf("reading line %d: %w", n, rerr)
		}
		if line != "" {
			if perr := st.line(strings.TrimRight(line, "\r\n")); perr != nil {
				problems = append(problems, fmt.Sprintf("line %d: %v", n, perr))
			}
		}
		if rerr != nil {
			break
		}
	}
	phases = make(map[string]*ShimPhases, len(ids))
	for id, s := range st {
		p := &s.phases
		if p.Create == nil {
			p.Missing = append(p.Missing, missingCreated)
		}
		if p.Start == nil {
			p.Missing = append(p.Missing, missingStarted)
		}
		phases[id] = p
	}
	return phases, problems, nil
}

// shimLogs are the wanted containers by id.
type shimLogs map[string]*shimLog

// steps are the *_ms fields of a msg line f of a wanted container, with
// that container's log; nil when f is not a wanted container's.
func (st shimLogs) steps(msg string, f map[string]string) (*shimLog, map[string]float64, error) {
	s := st[f["container"]]
	if s == nil {
		return nil, nil, nil
	}
	ms, err := msFields(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%q line of %s: %w", msg, f["container"], err)
	}
	return s, ms, nil
}

// line takes one log line.
func (st shimLogs) line(line string) error {
	var msg string
	for _, m := range []string{msgCreatingTask, msgAgentReady, msgCreated, msgStarted} {
		if strings.Contains(line, `msg="`+m+`"`) {
			msg = m
			break
		}
	}
	if msg == "" {
		return nil
	}
	f, err := parseLogfmt(line)
	if err != nil {
		return fmt.Errorf("%q line: %w", msg, err)
	}
	if f["msg"] != msg {
		return nil // the text was inside another field
	}
	switch msg {
	case msgCreatingTask:
		if s := st[f["id"]]; s != nil {
			s.open, s.sawTask, s.readies = true, true, nil
		}
	case msgAgentReady:
		// Lines that name their container (shims since d53df80) go to
		// it; older ones to every container whose create is open.
		if id, ok := f["container"]; ok {
			if s := st[id]; s != nil && s.open {
				s.readies = append(s.readies, f)
			}
			return nil
		}
		for _, s := range st {
			if s.open {
				s.readies = append(s.readies, f)
			}
		}
	case msgCreated:
		s, ms, err := st.steps(msg, f)
		if s == nil || err != nil {
			return err
		}
		s.phases.Create = ms
		s.open = false
		if _, booted := ms[report.StepBoot]; !booted {
			return nil // joined a VM another container booted
		}
		switch {
		case !s.sawTask:
			s.phases.Missing = append(s.phases.Missing, missingTask)
		case len(s.readies) == 0:
			s.phases.Missing = append(s.phases.Missing, missingReady)
		case len(s.readies) > 1:
			s.phases.Missing = append(s.phases.Missing, ambiguousReady)
		default:
			ready := s.readies[0]
			vm, err := msFields(ready)
			if err != nil {
				return fmt.Errorf("%q line of %s's VM: %w", msgAgentReady, f["container"], err)
			}
			if v, ok := vm[guestReadyField]; ok {
				s.phases.GuestReadyMs = &v
				delete(vm, guestReadyField)
			}
			s.phases.VM, s.phases.Boot = vm, ready["boot"]
		}
		s.readies = nil
	case msgStarted:
		s, ms, err := st.steps(msg, f)
		if s == nil || err != nil {
			return err
		}
		s.phases.Start = ms
	}
	return nil
}

// collectStartPhases fills in the start runs' phases from containerd's log
// and puts the runs into the results.
func (s *Session) collectStartPhases() {
	if len(s.startRuns) == 0 {
		return
	}
	s.Results.StartRuns = s.startRuns
	ids := make([]string, len(s.startRuns))
	for i, r := range s.startRuns {
		ids[i] = r.Container
	}
	phases, problems, err := readShimPhasesFile(s.Opts.ContainerdLog, ids)
	if err != nil {
		s.Results.Notes = append(s.Results.Notes, "start phases: "+err.Error())
		for _, r := range s.startRuns {
			r.Missing = append(r.Missing, "containerd's log could not be read: "+err.Error())
		}
		return
	}
	if len(problems) > 0 {
		s.Results.Notes = append(s.Results.Notes, fmt.Sprintf("start phases: %d line(s) of containerd's log with a phase message could not be read, first: %s",
			len(problems), problems[0]))
	}
	for _, r := range s.startRuns {
		p := phases[r.Container]
		r.Boot, r.VM, r.GuestReadyMs, r.Create, r.Start, r.Missing = p.Boot, p.VM, p.GuestReadyMs, p.Create, p.Start, p.Missing
	}
}

func readShimPhasesFile(path string, ids []string) (map[string]*ShimPhases, []string, error) {
	if path == "" {
		return nil, nil, errors.New("no containerd log given (--containerd-log)")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	return ReadShimPhases(f, ids)
}
