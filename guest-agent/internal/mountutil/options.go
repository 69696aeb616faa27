// Package mountutil turns OCI mount descriptions into mount(2) arguments and
// resolves paths inside a container root without escaping it.
package mountutil

import (
	"strings"

	"golang.org/x/sys/unix"
)

// Options is an OCI option list split the way mount(2) wants it.
type Options struct {
	// Flags to pass to mount(2).
	Flags uintptr
	// Propagation flags (MS_SHARED, MS_PRIVATE, ...), applied with a second
	// mount(2) call after the mount exists.
	Propagation uintptr
	// Data is the file-system specific option string (mode=, size=, ...).
	Data string
}

type flagOpt struct {
	clear bool
	flag  uintptr
}

var flagOpts = map[string]flagOpt{
	"ro":            {false, unix.MS_RDONLY},
	"rw":            {true, unix.MS_RDONLY},
	"nosuid":        {false, unix.MS_NOSUID},
	"suid":          {true, unix.MS_NOSUID},
	"nodev":         {false, unix.MS_NODEV},
	"dev":           {true, unix.MS_NODEV},
	"noexec":        {false, unix.MS_NOEXEC},
	"exec":          {true, unix.MS_NOEXEC},
	"sync":          {false, unix.MS_SYNCHRONOUS},
	"async":         {true, unix.MS_SYNCHRONOUS},
	"dirsync":       {false, unix.MS_DIRSYNC},
	"remount":       {false, unix.MS_REMOUNT},
	"mand":          {false, unix.MS_MANDLOCK},
	"nomand":        {true, unix.MS_MANDLOCK},
	"atime":         {true, unix.MS_NOATIME},
	"noatime":       {false, unix.MS_NOATIME},
	"diratime":      {true, unix.MS_NODIRATIME},
	"nodiratime":    {false, unix.MS_NODIRATIME},
	"relatime":      {false, unix.MS_RELATIME},
	"norelatime":    {true, unix.MS_RELATIME},
	"strictatime":   {false, unix.MS_STRICTATIME},
	"nostrictatime": {true, unix.MS_STRICTATIME},
	"lazytime":      {false, unix.MS_LAZYTIME},
	"nolazytime":    {true, unix.MS_LAZYTIME},
	"silent":        {false, unix.MS_SILENT},
	"loud":          {true, unix.MS_SILENT},
	"bind":          {false, unix.MS_BIND},
	"rbind":         {false, unix.MS_BIND | unix.MS_REC},
}

var propagationOpts = map[string]uintptr{
	"private":     unix.MS_PRIVATE,
	"rprivate":    unix.MS_PRIVATE | unix.MS_REC,
	"shared":      unix.MS_SHARED,
	"rshared":     unix.MS_SHARED | unix.MS_REC,
	"slave":       unix.MS_SLAVE,
	"rslave":      unix.MS_SLAVE | unix.MS_REC,
	"unbindable":  unix.MS_UNBINDABLE,
	"runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// ignoredOpts are OCI/mount(8) options with no mount(2) meaning.
var ignoredOpts = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "user": true, "nouser": true,
	"_netdev": true, "nofail": true,
}

// ParseOptions splits OCI mount options into flags, propagation and data.
// Later options win over earlier ones (ro,rw is rw), like mount(8).
func ParseOptions(opts []string) Options {
	var o Options
	var data []string
	for _, opt := range opts {
		opt = strings.TrimSpace(opt)
		if opt == "" || ignoredOpts[opt] {
			continue
		}
		if f, ok := flagOpts[opt]; ok {
			if f.clear {
				o.Flags &^= f.flag
			} else {
				o.Flags |= f.flag
			}
			continue
		}
		if p, ok := propagationOpts[opt]; ok {
			o.Propagation = p
			continue
		}
		data = append(data, opt)
	}
	o.Data = strings.Join(data, ",")
	return o
}

// NormalizeType maps OCI mount types to what the guest kernel mounts:
// cgroup (v1 name used by most OCI specs) becomes cgroup2, the only
// hierarchy the guest has.
func NormalizeType(typ string) string {
	switch typ {
	case "cgroup":
		return "cgroup2"
	default:
		return typ
	}
}
