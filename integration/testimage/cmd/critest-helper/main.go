// Command critest-helper is the one static program inside the stand-in images
// that hack/critest.sh builds for critest (sigs.k8s.io/cri-tools v1.37.0):
// what those tests need from the upstream images that a static busybox
// (Debian's busybox-static) does not do. Like busybox it is a multi-call
// binary: it runs the applet named by the base name of argv[0], or by its
// first argument when called as critest-helper.
//
//	nginx -listen ADDR   the nginx stand-in: serves an index page on ADDR
//	                     (default :80) to GET and HEAD, writes its PID to
//	                     /var/run/nginx.pid, and runs as "nginx: master
//	                     process ..." (the PodPID/ContainerPID specs read
//	                     /proc/1/cmdline for that; the HostPID spec finds it
//	                     with pidof nginx)
//	httpd-foreground     the httpd stand-in: serves on :80 and logs a line
//	                     with "httpd" (the multi-container spec greps its log)
//	nnp                  the nonewprivs stand-in, installed setuid root:
//	                     prints "Effective uid: N"
//	pgrep [-f] PATTERN   PIDs whose name (-f: command line) matches PATTERN,
//	                     exit 1 when none (busybox-static has no pgrep)
//	ipcs -m              the System V shared memory segments
//	                     (busybox-static has no ipcs)
//
// Every server exits 0 on SIGTERM or SIGINT: as PID 1 of a container a Go
// program that did not ask for them would never see them.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// nginxTitle is how nginx's master process names itself in its command line.
const nginxTitle = "nginx: master process"

var applets = map[string]func(args []string) error{
	"nginx":            nginx,
	"httpd-foreground": httpd,
	"nnp":              nnp,
	"pgrep":            pgrep,
	"ipcs":             ipcs,
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if strings.HasPrefix(name, nginxTitle) {
		name = "nginx"
	}
	if name == "critest-helper" {
		if len(args) == 0 {
			fmt.Fprintf(os.Stderr, "usage: critest-helper APPLET [ARGS...] (applets: %s)\n", strings.Join(appletNames(), ", "))
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	run, ok := applets[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "critest-helper: unknown applet %q (applets: %s)\n", name, strings.Join(appletNames(), ", "))
		os.Exit(2)
	}
	if err := run(args); err != nil {
		var ex exitCode
		if errors.As(err, &ex) {
			os.Exit(int(ex))
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// exitCode ends the program with that status and no message.
type exitCode int

func (e exitCode) Error() string { return "exit status " + strconv.Itoa(int(e)) }

func appletNames() []string {
	names := make([]string, 0, len(applets))
	for n := range applets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func nginx(args []string) error {
	fs := flag.NewFlagSet("nginx", flag.ContinueOnError)
	listen := fs.String("listen", ":80", "address to serve on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (only -listen ADDR)", fs.Args())
	}
	if !strings.HasPrefix(os.Args[0], nginxTitle) {
		// Take nginx's process title. Exec the path we were started by (not
		// /proc/self/exe) so that the kernel keeps "nginx" as the process name.
		self, err := lookPath(os.Args[0])
		if err != nil {
			return err
		}
		title := nginxTitle + " nginx -listen " + *listen
		return syscall.Exec(self, []string{title, "-listen", *listen}, os.Environ())
	}
	if err := os.MkdirAll("/var/run", 0o755); err != nil {
		return err
	}
	if err := os.WriteFile("/var/run/nginx.pid", []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	page := "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n" +
		"<body><h1>Welcome to nginx!</h1><p>gondolin's critest stand-in.</p></body></html>\n"
	return serve("nginx", *listen, page)
}

// lookPath resolves argv[0] the way the shell did: a name with a slash as
// it is, a bare name through PATH.
func lookPath(arg0 string) (string, error) {
	if strings.Contains(arg0, "/") {
		return arg0, nil
	}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(dir, arg0)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH %q", arg0, os.Getenv("PATH"))
}

func httpd(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments %q (none taken)", args)
	}
	return serve("httpd", ":80", "<html><body><h1>It works!</h1></body></html>\n")
}

// serve answers GET and HEAD of / and /index.html with page until SIGTERM or
// SIGINT, logging each request to stdout.
func serve(name, addr, page string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("%s (gondolin critest stand-in) pid %d serving on %s\n", name, os.Getpid(), l.Addr())
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("%s: %s %s %s\n", name, r.RemoteAddr, r.Method, r.URL.Path)
		if r.URL.Path != "/" && r.URL.Path != "/index.html" {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, page)
	})
	srv := &http.Server{Handler: mux}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		fmt.Printf("%s: signalled, exiting\n", name)
		return srv.Close()
	}
}

func nnp(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments %q (none taken)", args)
	}
	fmt.Printf("Effective uid: %d\n", syscall.Geteuid())
	return nil
}

func pgrep(args []string) error {
	fs := flag.NewFlagSet("pgrep", flag.ContinueOnError)
	full := fs.Bool("f", false, "match the whole command line, not the process name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("want one PATTERN, got %q (usage: pgrep [-f] PATTERN)", fs.Args())
	}
	re, err := regexp.Compile(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("pattern: %w", err)
	}
	pids, err := matchProcs("/proc", re, *full, os.Getpid())
	if err != nil {
		return err
	}
	for _, p := range pids {
		fmt.Println(p)
	}
	if len(pids) == 0 {
		return exitCode(1)
	}
	return nil
}

// matchProcs returns the PIDs under procDir, in order, whose name (full:
// command line, NULs as spaces) matches re, leaving out self. A process that
// exits while it is read is skipped.
func matchProcs(procDir string, re *regexp.Regexp, full bool, self int) ([]int, error) {
	ents, err := os.ReadDir(procDir)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var s string
		if full {
			b, err := os.ReadFile(filepath.Join(procDir, e.Name(), "cmdline"))
			if err != nil {
				continue
			}
			s = strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " ")
		} else {
			b, err := os.ReadFile(filepath.Join(procDir, e.Name(), "comm"))
			if err != nil {
				continue
			}
			s = strings.TrimSuffix(string(b), "\n")
		}
		if re.MatchString(s) {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids, nil
}

func ipcs(args []string) error {
	if len(args) != 1 || args[0] != "-m" {
		return fmt.Errorf("only 'ipcs -m' is supported, got %q", args)
	}
	f, err := os.Open("/proc/sysvipc/shm")
	if err != nil {
		return err
	}
	defer f.Close()
	return writeShm(os.Stdout, f)
}

// writeShm prints /proc/sysvipc/shm (r) as util-linux's ipcs -m does.
func writeShm(w io.Writer, r io.Reader) error {
	sc := bufio.NewScanner(r)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return err
		}
		return errors.New("/proc/sysvipc/shm is empty (no header line)")
	}
	col := map[string]int{}
	for i, h := range strings.Fields(sc.Text()) {
		col[h] = i
	}
	for _, h := range []string{"key", "shmid", "perms", "size", "nattch", "uid"} {
		if _, ok := col[h]; !ok {
			return fmt.Errorf("/proc/sysvipc/shm has no %q column: %q", h, sc.Text())
		}
	}
	fmt.Fprintf(w, "\n------ Shared Memory Segments --------\n")
	fmt.Fprintf(w, "%-10s %-10s %-10s %-10s %-10s %-10s\n", "key", "shmid", "owner", "perms", "bytes", "nattch")
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < len(col) {
			continue
		}
		key, err := strconv.ParseInt(f[col["key"]], 10, 64)
		if err != nil {
			return fmt.Errorf("key %q: %w", f[col["key"]], err)
		}
		// The kernel prints the mode in octal.
		perms, err := strconv.ParseUint(f[col["perms"]], 8, 32)
		if err != nil {
			return fmt.Errorf("perms %q: %w", f[col["perms"]], err)
		}
		fmt.Fprintf(w, "0x%08x %-10s %-10s %-10o %-10s %-10s\n", uint32(key), f[col["shmid"]],
			f[col["uid"]], perms&0o777, f[col["size"]], f[col["nattch"]])
	}
	return sc.Err()
}
