// Package agentlog is the agent's tiny logger. Every line starts with
// "gondolin-agent:" and the guest's uptime, so the host can quote the last
// lines of the serial console when a boot or a container fails.
package agentlog

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

var (
	mu    sync.Mutex
	out   io.Writer = os.Stderr
	debug           = false
)

// SetOutput redirects log lines (PID 1 points it at /dev/console).
func SetOutput(w io.Writer) {
	mu.Lock()
	out = w
	mu.Unlock()
}

// SetDebug turns Debugf lines on or off.
func SetDebug(on bool) {
	mu.Lock()
	debug = on
	mu.Unlock()
}

// Writer returns the current output (for libraries that want an io.Writer).
func Writer() io.Writer {
	mu.Lock()
	defer mu.Unlock()
	return out
}

func uptime() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return ""
	}
	return fmt.Sprintf("[%5d.%03d] ", ts.Sec, ts.Nsec/1e6)
}

func emit(level, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	msg = strings.TrimRight(msg, "\n")
	line := uptime() + "gondolin-agent: " + level + msg + "\n"
	mu.Lock()
	defer mu.Unlock()
	_, _ = io.WriteString(out, line)
}

// Infof logs a step.
func Infof(format string, args ...any) { emit("", format, args...) }

// Errorf logs an error clearly.
func Errorf(format string, args ...any) { emit("ERROR: ", format, args...) }

// Warnf logs a problem the agent works around.
func Warnf(format string, args ...any) { emit("warning: ", format, args...) }

// Debugf logs only when debug logging is on.
func Debugf(format string, args ...any) {
	mu.Lock()
	on := debug
	mu.Unlock()
	if on {
		emit("debug: ", format, args...)
	}
}
