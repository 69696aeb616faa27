package main

import (
	"flag"
	"strings"
)

// The manuals read like man pages: sections in capitals, their text
// indented by seven spaces, options by fourteen, at most 80 columns.
const (
	textIndent   = "       "
	optionIndent = "              "
	width        = 80
)

func mainManual(cmds []command) string {
	var b strings.Builder
	section(&b, "NAME", "gondolin - set up and watch the gondolin container runtime")
	section(&b, "SYNOPSIS", "gondolin COMMAND [OPTIONS] [ARGUMENTS]\ngondolin help [COMMAND]\ngondolin COMMAND --help")
	section(&b, "DESCRIPTION", `gondolin is the operator's side of the gondolin runtime, a containerd
shim (io.containerd.gondolin.v1) that runs every container in its own
QEMU micro-VM and holds its network to the egress policy of its
io.gondolin.* annotations. The command checks whether a host can run
it, registers the runtime with containerd and Docker, answers whether
the egress policy would allow a request (with the shim's own decision
code, without a container), and shows the decisions the shim audits.

Options may come before or after the arguments; -- ends them. Each
command's manual is "gondolin COMMAND --help".`)
	var list strings.Builder
	for _, c := range cmds {
		list.WriteString(c.name + "\n")
		list.WriteString(wrap(c.summary, "       ") + "\n")
	}
	section(&b, "COMMANDS", strings.TrimSuffix(list.String(), "\n"))
	section(&b, "EXIT STATUS", exitStatusText(""))
	section(&b, "EXAMPLES", `gondolin check
gondolin install --containerd --docker --dry-run
gondolin install --containerd --docker
gondolin policy test --annotation io.gondolin.policy=npm \
    https://registry.npmjs.org/
gondolin audit --denied --all
gondolin audit --follow 3f2a9c1b7e4d`)
	section(&b, "SEE ALSO", "docs/cli.md, docs/install.md, docs/annotations.md, docs/configuration.md")
	return b.String()
}

func manual(c command) string {
	var b strings.Builder
	section(&b, "NAME", "gondolin "+c.name+" - "+c.summary)
	syn := make([]string, len(c.synopsis))
	for i, s := range c.synopsis {
		syn[i] = wrapSynopsis("gondolin "+c.name+" ", s)
	}
	section(&b, "SYNOPSIS", strings.Join(syn, "\n"))
	section(&b, "DESCRIPTION", c.description)
	section(&b, "OPTIONS", optionsText(c))
	section(&b, "EXIT STATUS", exitStatusText(c.exitStatus))
	section(&b, "EXAMPLES", c.examples)
	section(&b, "SEE ALSO", "gondolin --help, docs/cli.md")
	return b.String()
}

func exitStatusText(extra string) string {
	s := `0      Success.
1      The operation failed; the message on standard error says why.
2      Bad usage: an unknown command or option, a missing or extra
       argument, or an option value that cannot be right.`
	if extra != "" {
		s += "\n\n" + extra
	}
	return s
}

// section writes a heading and its text, each line indented (blank lines
// stay blank).
func section(b *strings.Builder, heading, text string) {
	if b.Len() > 0 {
		b.WriteString("\n")
	}
	b.WriteString(heading + "\n")
	for _, line := range strings.Split(strings.Trim(text, "\n"), "\n") {
		if line != "" {
			b.WriteString(textIndent + line)
		}
		b.WriteString("\n")
	}
}

// optionsText lists the command's flags, as they are defined, with their
// usage strings: the manual cannot drift from what the command accepts.
func optionsText(c command) string {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.flags(fs)
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		b.WriteString("--" + f.Name)
		if name != "" {
			b.WriteString(" " + name)
		}
		b.WriteString("\n")
		if isDefaultShown(f) {
			usage += " (default: " + f.DefValue + ")"
		}
		b.WriteString(wrap(usage, optionIndent[len(textIndent):]) + "\n")
	})
	b.WriteString("-h, --help\n" + optionIndent[len(textIndent):] + "Show this manual.")
	return b.String()
}

func isDefaultShown(f *flag.Flag) bool {
	if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
		return false
	}
	return f.DefValue != ""
}

// wrap fills text into lines that, with the section's indent and
// prefix, fit the width.
func wrap(text, prefix string) string {
	max := width - len(textIndent) - len(prefix)
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		if line != "" && len(line)+1+len(word) > max {
			lines = append(lines, prefix+line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	if line != "" {
		lines = append(lines, prefix+line)
	}
	return strings.Join(lines, "\n")
}

// wrapSynopsis fills a synopsis line, continuing under its first option,
// and never breaks inside [brackets].
func wrapSynopsis(lead, text string) string {
	var words []string
	depth, start := 0, 0
	for i, r := range text {
		switch {
		case r == '[':
			depth++
		case r == ']':
			depth--
		case r == ' ' && depth == 0:
			if i > start {
				words = append(words, text[start:i])
			}
			start = i + 1
		}
	}
	words = append(words, text[start:])
	max := width - len(textIndent)
	hang := strings.Repeat(" ", len(lead))
	var b strings.Builder
	line := lead
	for i, w := range words {
		if i > 0 && len(line)+1+len(w) > max {
			b.WriteString(line + "\n")
			line = hang + w
			continue
		}
		if i > 0 {
			line += " "
		}
		line += w
	}
	b.WriteString(line)
	return b.String()
}
