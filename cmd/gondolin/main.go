// Command gondolin is the operator's tool for the gondolin runtime:
// registering it with containerd and Docker, and reading the egress audit.
// Each subcommand is a file here that parses its flags and calls the
// package doing the job (hostinstall, auditlog); this file dispatches,
// prints the manuals and turns errors into exit statuses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Exit statuses, the same for every subcommand.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// command is one subcommand. To add one, write a file with a function
// returning its command and list that function in commands.
type command struct {
	name string
	// summary is the one line of NAME and of the command list.
	summary string
	// synopsis lines, without the leading "gondolin NAME".
	synopsis []string
	// description, exitStatus (the lines after the common three) and
	// examples are the manual's sections, as plain text: lines are
	// indented as they are written here.
	description string
	exitStatus  string
	examples    string
	// flags defines the command's flags and returns the function that
	// runs it with the positional arguments.
	flags func(fs *flag.FlagSet) runFunc
}

type runFunc func(ctx context.Context, s ioStreams, args []string) error

type ioStreams struct {
	stdout, stderr io.Writer
	now            func() time.Time
}

// commands lists the subcommands in the order the manual shows them.
func commands() []command {
	return []command{checkCommand(), installCommand(), uninstallCommand(), auditCommand(), policyCommand()}
}

// usageError is bad usage (exit status 2): an unknown flag or command, a
// missing or extra argument, a flag value that cannot be right.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// statusError ends a command with a status of its choice, its message
// already printed (or empty).
type statusError struct {
	status int
	msg    string
}

func (e statusError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	status := run(ctx, os.Args[1:], ioStreams{stdout: os.Stdout, stderr: os.Stderr, now: time.Now})
	stop()
	os.Exit(status)
}

func run(ctx context.Context, args []string, s ioStreams) int {
	cmds := commands()
	if len(args) == 0 {
		fmt.Fprintf(s.stderr, "gondolin: a command is needed: %s\nRun 'gondolin --help' for the manual.\n", commandNames(cmds))
		return exitUsage
	}
	switch name := args[0]; name {
	case "-h", "-help", "--help":
		fmt.Fprint(s.stdout, mainManual(cmds))
		return exitOK
	case "help":
		if len(args) == 1 {
			fmt.Fprint(s.stdout, mainManual(cmds))
			return exitOK
		}
		if c, ok := find(cmds, args[1]); ok && len(args) == 2 {
			fmt.Fprint(s.stdout, manual(c))
			return exitOK
		}
		fmt.Fprintf(s.stderr, "gondolin help: expected one of %s\n", commandNames(cmds))
		return exitUsage
	}
	c, ok := find(cmds, args[0])
	if !ok {
		fmt.Fprintf(s.stderr, "gondolin: unknown command %q: expected one of %s\nRun 'gondolin --help' for the manual.\n", args[0], commandNames(cmds))
		return exitUsage
	}
	fs := flag.NewFlagSet("gondolin "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	runCmd := c.flags(fs)
	pos, err := parseInterspersed(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(s.stdout, manual(c))
		return exitOK
	}
	if err == nil {
		err = runCmd(ctx, s, pos)
	}
	var ue usageError
	var se statusError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(s.stderr, "gondolin %s: %s\nRun 'gondolin %s --help' for the manual.\n", c.name, ue.msg, c.name)
		return exitUsage
	case errors.As(err, &se):
		if se.msg != "" {
			fmt.Fprintf(s.stderr, "gondolin %s: %s\n", c.name, se.msg)
		}
		return se.status
	default:
		fmt.Fprintf(s.stderr, "gondolin %s: %v\n", c.name, err)
		return exitFailed
	}
}

// parseInterspersed parses flags wherever they are among the positional
// arguments (`gondolin audit web --denied` as well as `--denied web`),
// which the flag package alone does not; "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func find(cmds []command, name string) (command, bool) {
	for _, c := range cmds {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func commandNames(cmds []command) string {
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}
