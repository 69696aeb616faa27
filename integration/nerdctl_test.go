//go:build integration

package integration

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/earendil-works/gondolin-containerd/integration/testimage"
)

// What a nerdctl user does, with runc and with gondolin side by side
// (docs/nerdctl.md). The private nerdctl of each test: nerdctl_helpers_test.go.

// run -d -p HOSTPORT:80 serves on the host's 127.0.0.1:HOSTPORT through
// the CNI portmap plugin, and the container has the address nerdctl gave
// it.
func TestNerdctlPublishedPort(t *testing.T) {
	e := newNerdctl(t)
	for _, rt := range nerdctlRuntimes {
		t.Run(rt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			port := ln.Addr().(*net.TCPAddr).Port
			ln.Close()
			e.ports = append(e.ports, port)
			start := time.Now()
			id := e.runDetached(t, rt.runtime, []string{"-p", fmt.Sprintf("%d:80", port)},
				"sh", "-c", "mkdir -p /www && echo published-"+rt.name+" > /www/index.html && exec httpd -f -p 80 -h /www")
			body := waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/index.html", port), 90*time.Second)
			t.Logf("%s: the published port answered %s after nerdctl run -d started", rt.name, time.Since(start).Round(time.Millisecond))
			if strings.TrimSpace(body) != "published-"+rt.name {
				t.Fatalf("published port: %q", body)
			}
			ip := e.inspect(t, id, "{{.NetworkSettings.IPAddress}}")
			if addr, err := netip.ParseAddr(ip); err != nil || !e.subnet.Contains(addr) {
				t.Fatalf("nerdctl gave the container address %q, want one in %s", ip, e.subnet)
			}
			if res := e.nerdctl(t, nil, "exec", id, "cat", "/proc/net/fib_trie"); res.code != 0 || !strings.Contains(res.stdout, ip) {
				t.Errorf("the container does not have its address %s: %s", ip, res)
			}
		})
	}
}

// exec (output and exit code), logs, stop (SIGTERM ignored: SIGKILL after
// the timeout, exit 137) and rm -f of a running container. The gondolin
// container runs its own kernel, the runc one the host's.
func TestNerdctlLifecycle(t *testing.T) {
	e := newNerdctl(t)
	for _, rt := range nerdctlRuntimes {
		t.Run(rt.name, func(t *testing.T) {
			id := e.runDetached(t, rt.runtime, nil, "sh", "-c", "trap '' TERM; echo started; sleep 1000")
			// nerdctl exec exits 1 and names the process's exit code
			// (pkg/cmd/container/exec.go: "exec failed with exit code
			// %d"), with either runtime.
			if res := e.nerdctl(t, nil, "exec", id, "sh", "-c", "echo from-exec; exit 3"); res.code != 1 || res.stdout != "from-exec\n" || !strings.Contains(res.stderr, "exit code 3") {
				t.Fatalf("nerdctl exec: %s", res)
			}
			kernel := strings.TrimSpace(e.must(t, "exec", id, "uname", "-r"))
			if vm := kernel != hostKernel(t); vm != (rt.runtime == runtimeName) {
				t.Fatalf("%s: the container runs kernel %s, the host %s", rt.name, kernel, hostKernel(t))
			}
			deadline := time.Now().Add(30 * time.Second)
			for !strings.Contains(e.nerdctl(t, nil, "logs", id).stdout, "started") {
				if time.Now().After(deadline) {
					t.Fatalf("nerdctl logs never showed the output: %s", e.nerdctl(t, nil, "logs", id))
				}
				time.Sleep(200 * time.Millisecond)
			}
			start := time.Now()
			if res := e.nerdctl(t, nil, "stop", "-t", "2", id); res.code != 0 {
				t.Fatalf("nerdctl stop: %s", res)
			}
			if d := time.Since(start); d < 2*time.Second {
				t.Fatalf("a process ignoring SIGTERM stopped after %s, before the timeout", d)
			}
			if st, code := e.inspect(t, id, "{{.State.Status}}"), e.inspect(t, id, "{{.State.ExitCode}}"); st != "exited" || code != "137" {
				t.Fatalf("after stop: status %q, exit code %s; want exited, 137", st, code)
			}
			if res := e.nerdctl(t, nil, "logs", id); res.code != 0 || res.stdout != "started\n" {
				t.Fatalf("nerdctl logs of the stopped container: %s", res)
			}

			running := e.runDetached(t, rt.runtime, nil, "sleep", "1000")
			if st := e.inspect(t, running, "{{.State.Status}}"); st != "running" {
				t.Fatalf("before rm -f: %s", st)
			}
			if res := e.nerdctl(t, nil, "rm", "-f", running); res.code != 0 {
				t.Fatalf("nerdctl rm -f: %s", res)
			}
			if res := e.nerdctl(t, nil, "inspect", running); res.code == 0 {
				t.Fatalf("the container survived rm -f: %s", res)
			}
			assertNoLeftoversIn(t, e.ns, running)
		})
	}
}

// -v host:/data binds a host directory read/write (and :ro read-only).
func TestNerdctlBindVolume(t *testing.T) {
	e := newNerdctl(t)
	for _, rt := range nerdctlRuntimes {
		t.Run(rt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "host.txt"), []byte("from host\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			res := e.run(t, rt.runtime, []string{"-v", dir + ":/data", "-v", dir + ":/ro:ro"},
				"sh", "-c", "cat /data/host.txt; echo from "+rt.name+" > /data/guest.txt; touch /ro/x 2>/dev/null && echo ro-writable || echo ro-refused")
			if res.code != 0 || res.stdout != "from host\nro-refused\n" {
				t.Fatalf("%s", res)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "guest.txt")); string(b) != "from "+rt.name+"\n" {
				t.Fatalf("write through the bind: %q", b)
			}
		})
	}
}

// --annotation io.gondolin.vm.memory sizes gondolin's VM; runc accepts
// and ignores it. A malformed one fails the gondolin run with the key in
// the message, and runc does not look at it.
func TestNerdctlAnnotation(t *testing.T) {
	e := newNerdctl(t)
	memTotal := func(t *testing.T, res result) int {
		t.Helper()
		n, err := strconv.Atoi(strings.TrimSpace(res.stdout))
		if res.code != 0 || err != nil {
			t.Fatalf("MemTotal: %s", res)
		}
		return n
	}
	meminfo := []string{"awk", "/MemTotal/ {print int($2/1024)}", "/proc/meminfo"}
	host := memTotal(t, command(t, nil, meminfo[0], meminfo[1:]...))
	for _, rt := range nerdctlRuntimes {
		t.Run(rt.name, func(t *testing.T) {
			mem := memTotal(t, e.run(t, rt.runtime, []string{"--annotation", "io.gondolin.vm.memory=256M"}, meminfo...))
			if rt.runtime == runtimeName {
				if mem > 256 || mem < 128 {
					t.Fatalf("io.gondolin.vm.memory=256M: the guest has %d MiB", mem)
				}
			} else if mem != host {
				t.Fatalf("runc with the annotation sees %d MiB, the host has %d MiB", mem, host)
			}
			bad := e.run(t, rt.runtime, []string{"--annotation", "io.gondolin.vm.memory=lots"}, "true")
			switch {
			case rt.runtime != runtimeName && bad.code != 0:
				t.Fatalf("runc should ignore io.gondolin.* annotations: %s", bad)
			case rt.runtime == runtimeName && (bad.code == 0 || !strings.Contains(bad.stderr, "io.gondolin.vm.memory")):
				t.Fatalf("want a clear error naming io.gondolin.vm.memory: %s", bad)
			}
		})
	}
}

// run -it and exec -it through a real terminal: the shell reads it, its
// size follows a resize, and its exit code comes back (run -it exits
// with it; exec -it exits 1 and names it, as exec does).
func TestNerdctlInteractiveTTY(t *testing.T) {
	e := newNerdctl(t)
	session := func(t *testing.T, p *ptyDocker, wantCode int) {
		p.expect("", "# ", 60*time.Second)
		p.expect("stty size", "30 90", 30*time.Second)
		p.resize(50, 120)
		p.expect("stty size", "50 120", 30*time.Second)
		if code := p.exit("exit 7", 60*time.Second); code != wantCode {
			t.Fatalf("nerdctl exited %d, want %d; the terminal printed:\n%q", code, wantCode, p.output())
		}
	}
	for _, rt := range nerdctlRuntimes {
		t.Run(rt.name+"/run", func(t *testing.T) {
			cidfile := filepath.Join(t.TempDir(), "cid")
			t.Cleanup(func() {
				if b, err := os.ReadFile(cidfile); err == nil && len(b) > 0 {
					e.ids[strings.TrimSpace(string(b))] = true
				}
			})
			p := e.startPTYNerdctl(t, 30, 90, e.runArgs(t, []string{"-it", "--rm", "--cidfile", cidfile}, rt.runtime, nil, []string{"sh"})...)
			session(t, p, 7)
		})
		t.Run(rt.name+"/exec", func(t *testing.T) {
			id := e.runDetached(t, rt.runtime, nil, "sleep", "1000")
			p := e.startPTYNerdctl(t, 30, 90, "exec", "-it", id, "sh")
			session(t, p, 1)
			if !strings.Contains(p.output(), "exit code 7") {
				t.Fatalf("nerdctl exec -it does not name the shell's exit code 7; the terminal printed:\n%q", p.output())
			}
		})
	}
}

// composeFile is a project of two services, each serving its name over
// HTTP (busybox httpd, the host's static busybox bound in) and fetching
// the other's with curl, on a default network with the given subnet. The
// services run the Debian image: the test image's static busybox cannot
// resolve a name from /etc/hosts (glibc's static getaddrinfo: wget and nc
// die of SIGSEGV, with runc too), curl does. For gondolin, whose egress
// policy refuses internal addresses, the services' annotations open the
// egress (net.mode=open) and name the network's subnet in
// net.allow-internal; runc ignores them. The names resolve through the
// /etc/hosts nerdctl keeps for each container of the network.
func composeFile(image, runtime string, subnet netip.Prefix) string {
	service := func(name string) string {
		return fmt.Sprintf(`  %[1]s:
    image: %[2]s
    runtime: %[3]s
    annotations:
      io.gondolin.net.mode: open
      io.gondolin.net.allow-internal: %[4]s
    volumes:
      - %[5]s:/opt/busybox:ro
    command: ["/bin/sh", "-c", "mkdir -p /www && echo %[1]s > /www/index.html && exec /opt/busybox httpd -f -p 80 -h /www"]
`, name, image, runtime, subnet, testimage.DefaultBusybox)
	}
	return "services:\n" + service("web") + service("client") + fmt.Sprintf(`networks:
  default:
    ipam:
      config:
        - subnet: %s
`, subnet)
}

// composeProject is a compose project name unique to the test: lower
// case letters and digits, at most 30 of them (its network is
// PROJECT_default, its containers PROJECT-SERVICE-1).
func composeProject(t *testing.T) string {
	p := strings.ReplaceAll(newID(t), "-", "")
	if len(p) > 30 {
		p = p[len(p)-30:]
	}
	return "p" + p
}

// compose up -d of two services that reach each other by service name,
// then compose down.
func TestNerdctlCompose(t *testing.T) {
	e := newNerdctl(t)
	e.load(t, "GONDOLIN_DISTRO_IMAGE")
	for _, rt := range nerdctlRuntimes {
		t.Run(rt.name, func(t *testing.T) {
			project := composeProject(t)
			network := project + "_default"
			subnet := e.freeSubnet(t)
			file := filepath.Join(t.TempDir(), "compose.yaml")
			if err := os.WriteFile(file, []byte(composeFile(distroImage(t), rt.runtime, subnet)), 0o644); err != nil {
				t.Fatal(err)
			}
			compose := func(args ...string) result {
				return e.nerdctl(t, nil, append([]string{"compose", "-f", file, "-p", project}, args...)...)
			}
			e.networks[network] = ""
			t.Cleanup(func() {
				e.addNetwork(t, network)
				if res := compose("down"); res.code != 0 {
					t.Errorf("compose down: %s", res)
				}
			})
			if res := compose("up", "-d"); res.code != 0 {
				t.Fatalf("compose up -d: %s", res)
			}
			e.addNetwork(t, network)
			names := map[string]string{}
			for _, svc := range []string{"web", "client"} {
				names[svc] = project + "-" + svc + "-1"
				id := e.inspect(t, names[svc], "{{.ID}}")
				e.ids[id] = true
				kernel := strings.TrimSpace(e.must(t, "exec", id, "uname", "-r"))
				if vm := kernel != hostKernel(t); vm != (rt.runtime == runtimeName) {
					t.Fatalf("%s: service %s runs kernel %s, the host %s", rt.name, svc, kernel, hostKernel(t))
				}
			}
			fetch := func(from, to string) {
				t.Helper()
				deadline := time.Now().Add(90 * time.Second)
				for {
					res := e.nerdctl(t, nil, "exec", names[from], "curl", "-sS", "--max-time", "5", "http://"+to+"/index.html")
					if res.code == 0 && strings.TrimSpace(res.stdout) == to {
						return
					}
					if time.Now().After(deadline) {
						hosts := e.nerdctl(t, nil, "exec", names[from], "cat", "/etc/hosts")
						t.Fatalf("%s cannot reach %s by name: %s\nits /etc/hosts: %s", from, to, res, hosts)
					}
					time.Sleep(time.Second)
				}
			}
			fetch("client", "web")
			fetch("web", "client")
			if res := compose("down"); res.code != 0 {
				t.Fatalf("compose down: %s", res)
			}
			if res := e.nerdctl(t, nil, "ps", "-a", "-q", "--filter", "label=com.docker.compose.project="+project); res.code != 0 || strings.TrimSpace(res.stdout) != "" {
				t.Fatalf("containers after compose down: %s", res)
			}
			if res := e.nerdctl(t, nil, "network", "inspect", network); res.code == 0 {
				t.Fatalf("the network survived compose down: %s", res)
			}
		})
	}
}

// With gondolin the egress policy can stay in policy mode for compose:
// the server's address is pinned in the compose file, and the client may
// open raw TCP to exactly that address and port (net.tcp-allow, with the
// address in net.allow-internal). The name still resolves through
// /etc/hosts; another port of the same server is refused. (net.allow=web
// cannot do it: in policy mode the shim resolves a request's host itself,
// and the host has no "web".)
func TestNerdctlComposePolicy(t *testing.T) {
	e := newNerdctl(t)
	e.load(t, "GONDOLIN_DISTRO_IMAGE")
	project := composeProject(t)
	network := project + "_default"
	subnet := e.freeSubnet(t)
	a := subnet.Addr().As4()
	a[3] = 10
	web := netip.AddrFrom4(a)
	compose := fmt.Sprintf(`services:
  web:
    image: %[1]s
    runtime: %[2]s
    volumes:
      - %[3]s:/opt/busybox:ro
    networks:
      default:
        ipv4_address: %[4]s
    command: ["/bin/sh", "-c", "mkdir -p /www && echo web > /www/index.html && /opt/busybox httpd -p 8080 -h /www && exec /opt/busybox httpd -f -p 80 -h /www"]
  client:
    image: %[1]s
    runtime: %[2]s
    annotations:
      io.gondolin.net.tcp-allow: %[4]s:80
      io.gondolin.net.allow-internal: %[4]s
    command: ["sleep", "1000"]
networks:
  default:
    ipam:
      config:
        - subnet: %[5]s
`, distroImage(t), runtimeName, testimage.DefaultBusybox, web, subnet)
	file := filepath.Join(t.TempDir(), "compose.yaml")
	if err := os.WriteFile(file, []byte(compose), 0o644); err != nil {
		t.Fatal(err)
	}
	e.networks[network] = ""
	t.Cleanup(func() {
		e.addNetwork(t, network)
		if res := e.nerdctl(t, nil, "compose", "-f", file, "-p", project, "down"); res.code != 0 {
			t.Errorf("compose down: %s", res)
		}
	})
	if res := e.nerdctl(t, nil, "compose", "-f", file, "-p", project, "up", "-d"); res.code != 0 {
		t.Fatalf("compose up -d: %s", res)
	}
	e.addNetwork(t, network)
	for _, svc := range []string{"web", "client"} {
		e.ids[e.inspect(t, project+"-"+svc+"-1", "{{.ID}}")] = true
	}
	client := project + "-client-1"
	curl := func(url string) result {
		return e.nerdctl(t, nil, "exec", client, "curl", "-sS", "--max-time", "5", url)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		res := curl("http://web/index.html")
		if res.code == 0 && strings.TrimSpace(res.stdout) == "web" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client cannot reach web:80 by name under net.tcp-allow: %s", res)
		}
		time.Sleep(time.Second)
	}
	// The server listens on 8080 too; the policy refuses the connection.
	if res := curl("http://web:8080/index.html"); res.code == 0 || strings.Contains(res.stdout, "web") {
		t.Fatalf("web:8080 is not in net.tcp-allow, yet the client reached it: %s", res)
	}
}
