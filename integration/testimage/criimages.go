package testimage

import (
	"fmt"
	"sort"
	"strings"
)

// The stand-ins of the images critest (sigs.k8s.io/cri-tools v1.37.0) pulls,
// built from the same static busybox, for hack/critest.sh. Each is what the
// specs of pkg/validate need from the upstream image and no more; where
// busybox cannot do it, critest-helper (integration/testimage/cmd/critest-helper)
// does, as a multi-call binary at /usr/local/bin/critest-helper.
//
// What the specs need, by image:
//   - e2e-test-images/busybox:1.29-2, every spec's container: busybox's applets
//     (sh, top, ping, brctl, netstat, hostname, mount, ...) as hard links, as
//     upstream has them (the MaskedPaths spec masks /bin/ls), "nobody" in
//     /etc/passwd, and pgrep and ipcs, which busybox-static lacks
//     (critest-helper, in /usr/local/bin, first in PATH).
//   - e2e-test-images/nginx:1.14-2: a web server on :80 as its default command,
//     /var/run/nginx.pid, "master process" in /proc/1/cmdline, and a process
//     pidof finds as nginx.
//   - e2e-test-images/httpd:2.4.39-4: a web server on :80 that logs "httpd".
//   - e2e-test-images/nonewprivs:1.3: a setuid-root entrypoint printing
//     "Effective uid: N".
//   - pause:3.9 from registry.k8s.io and k8s.gcr.io: one image under both names.
//   - k8s-staging-cri-tools/test-image-*: images of their own (the specs remove
//     them by ID and count IDs), test-image-tags:1..3 one image; the user
//     variants differ in their config's User; test-image-predefined-group has
//     default-user (1000) in group-defined-in-image (50000) and runs as 1000.
//   - k8s-staging-cri-tools/hostnet-nginx-amd64: the nginx stand-in on :12003.
// Not built: test-image-digest@sha256:9700f9a2…, which only the upstream bytes
// can match (hack/critest-skip.txt skips its spec).

// CRIPasswd and CRIGroup are /etc/passwd and /etc/group of the stand-ins:
// busybox's own users, with www-data and the "users" group that the user
// variants name.
const (
	CRIPasswd = "root:x:0:0:root:/root:/bin/sh\n" +
		"daemon:x:1:1:daemon:/usr/sbin:/bin/false\n" +
		"bin:x:2:2:bin:/bin:/bin/false\n" +
		"sys:x:3:3:sys:/dev:/bin/false\n" +
		"www-data:x:33:33:www-data:/var/www:/bin/false\n" +
		"nobody:x:65534:65534:nobody:/home:/bin/false\n"
	CRIGroup = "root:x:0:\n" +
		"daemon:x:1:\n" +
		"bin:x:2:\n" +
		"sys:x:3:\n" +
		"www-data:x:33:\n" +
		"users:x:100:\n" +
		"nogroup:x:65534:\n"
)

// CRIHelperPath is where critest-helper is in every stand-in.
const CRIHelperPath = "usr/local/bin/critest-helper"

// CRIImage is one stand-in: every name critest pulls it under (all the same
// image) and how to build it.
type CRIImage struct {
	Names   []string
	Options Options
}

// CRIImages returns the stand-ins, built from the static busybox at busybox
// and the critest-helper binary helper (its bytes).
func CRIImages(busybox string, helper []byte) []CRIImage {
	const (
		e2e     = "registry.k8s.io/e2e-test-images/"
		staging = "gcr.io/k8s-staging-cri-tools/"
	)
	link := func(p string) File { return File{Path: p, Link: "/" + CRIHelperPath} }
	image := func(names []string, o Options, extra ...File) CRIImage {
		o.Busybox = busybox
		o.Name = names[0]
		o.HardLinks = true
		if o.Passwd == "" {
			o.Passwd = CRIPasswd
		}
		if o.Group == "" {
			o.Group = CRIGroup
		}
		o.Files = append([]File{
			{Path: CRIHelperPath, Mode: 0o755, Data: helper},
			link("usr/local/bin/pgrep"),
			link("usr/local/bin/ipcs"),
		}, extra...)
		o.Description = "gondolin's critest stand-in for " + strings.Join(names, ", ")
		return CRIImage{Names: names, Options: o}
	}
	nginx := func(name, listen string) CRIImage {
		return image([]string{name}, Options{Cmd: []string{"nginx", "-listen", listen}}, link("usr/sbin/nginx"))
	}
	user := func(name, u string) CRIImage {
		return image([]string{staging + name + ":latest"}, Options{User: u})
	}
	plain := func(names ...string) CRIImage { return image(names, Options{}) }

	return []CRIImage{
		plain(e2e + "busybox:1.29-2"),
		nginx(e2e+"nginx:1.14-2", ":80"),
		image([]string{e2e + "httpd:2.4.39-4"}, Options{Cmd: []string{"httpd-foreground"}},
			link("usr/local/bin/httpd-foreground")),
		image([]string{e2e + "nonewprivs:1.3"}, Options{Entrypoint: []string{"/usr/local/bin/nnp"}},
			File{Path: "usr/local/bin/nnp", Mode: 0o4755, Data: helper}),
		image([]string{"registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"}, Options{Cmd: PauseCmd}),
		plain(staging + "test-image-latest:latest"),
		plain(staging + "test-image-tag:test"),
		plain(staging + "test-image-tag:all"),
		plain(staging + "test-image-1:latest"),
		plain(staging + "test-image-2:latest"),
		plain(staging + "test-image-3:latest"),
		plain(staging+"test-image-tags:1", staging+"test-image-tags:2", staging+"test-image-tags:3"),
		user("test-image-user-uid", "1002"),
		user("test-image-user-username", "www-data"),
		user("test-image-user-uid-group", "1003:users"),
		user("test-image-user-username-group", "www-data:users"),
		image([]string{staging + "test-image-predefined-group:latest"}, Options{
			User:   "1000",
			Passwd: CRIPasswd + "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n",
			Group:  CRIGroup + "default-user:x:1000:\n" + "group-defined-in-image:x:50000:default-user\n",
		}, File{Path: "home/default-user", Dir: true, Mode: 0o755, UID: 1000, GID: 1000}),
		nginx(staging+"hostnet-nginx-amd64:latest", ":12003"),
	}
}

// SplitName splits a full image name (host/path:tag) into the registry host,
// the repository path inside it and the tag.
func SplitName(name string) (host, repo, tag string, err error) {
	tag, err = RefName(name)
	if err != nil {
		return "", "", "", err
	}
	hostPath := strings.TrimSuffix(name, ":"+tag)
	host, repo, ok := strings.Cut(hostPath, "/")
	if !ok || repo == "" || !strings.ContainsAny(host, ".:") {
		return "", "", "", fmt.Errorf("image name %q: want HOST/PATH:TAG with a registry host (e.g. registry.k8s.io/pause:3.9)", name)
	}
	return host, repo, tag, nil
}

// RepoTags groups an image's names by repository path (the host left out:
// one registry serves them all), with the tags of each, sorted.
func RepoTags(names []string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, n := range names {
		_, repo, tag, err := SplitName(n)
		if err != nil {
			return nil, err
		}
		dup := false
		for _, t := range out[repo] {
			dup = dup || t == tag
		}
		if !dup {
			out[repo] = append(out[repo], tag)
		}
	}
	for _, tags := range out {
		sort.Strings(tags)
	}
	return out, nil
}
