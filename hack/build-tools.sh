#!/usr/bin/env bash
# Build the developer tools the project needs from the Go module proxy into DIR/bin,
# at the versions pinned in hack/versions.env:
#
#   containerd  containerd and ctr
#   runc        runc (-tags seccomp) and containerd's runc shim containerd-shim-runc-v2
#   docker      dockerd and docker-proxy (github.com/moby/moby/v2) and the docker CLI
#               (github.com/docker/cli), for the private dockerd of `make dev-up`
#   runsc       gVisor's runsc and containerd-shim-runsc-v1 (only for `make bench`)
#   qemu        QEMU 10 from Debian's bookworm-backports, unpacked into DIR/qemu (the
#               system's QEMU 7.2 stays), for resuming VMs from snapshots
#   virtiofsd   the Rust virtiofsd, from Debian's crate packages with Debian's Rust
#               toolchain (hack/virtiofsd/README.md), which can save its state with a VM
#   vsock       vhost-device-vsock (rust-vmm), Debian's binary package
#               (hack/vhost-device-vsock/README.md): the userspace vhost-user vsock
#               back-end for hosts without /dev/vhost-vsock; only on request until
#               the agent talks over vsock (issue 18)
#   cni         the CNI plugins nerdctl's networks chain (bridge, host-local, loopback,
#               portmap, firewall, tuning), into DIR/cni/bin (nerdctl --cni-path)
#   critools    crictl and critest (sigs.k8s.io/cri-tools), for the CRI tests
#   registry    the distribution registry (cmd/registry), a local plain-HTTP registry
#   nerdctl     nerdctl (github.com/containerd/nerdctl/v2), built from a copy of its
#               module with the go.mod edits hack/versions.env describes
#   kubelet     the kubelet (k8s.io/kubernetes cmd/kubelet), built from a copy of its
#               module with its staging modules taken from the proxy (hack/versions.env);
#               only on request: about ten minutes on 2 cores with a cold build cache
#
# make build takes qemu and virtiofsd from here into _output/lib/gondolin, where the
# shim's default config finds them (hack/vmm-bundle.sh).
#
# Usage: hack/build-tools.sh DIR [COMPONENT...]   (make tools: DIR = .cache/tools;
#        default components: containerd runc docker virtiofsd qemu cni critools
#        registry nerdctl)
#
# Each component is skipped when DIR/bin (DIR/cni/bin for cni) already holds its
# binaries built for the pinned version (recorded in DIR/bin/.<component>.stamp).
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=hack/versions.env
source "$REPO_ROOT/hack/versions.env"

[[ $# -ge 1 ]] || die "usage: $0 DIR [containerd|runc|docker|runsc|virtiofsd|vsock|qemu|cni|critools|registry|nerdctl|kubelet...] (tools are installed into DIR/bin)"
mkdir -p "$1/bin"
dir="$(cd "$1" && pwd)"
bin="$dir/bin"
shift
components=("$@")
# Not by default: vsock (nothing uses it yet; it joins the list when the agent
# talks over vsock, issue 18), runsc and kubelet (slow builds for some tests only).
((${#components[@]} > 0)) || components=(containerd runc docker virtiofsd qemu cni critools registry nerdctl)
for c in "${components[@]}"; do
	case $c in
	containerd | runc | docker | runsc | virtiofsd | vsock | qemu | cni | critools | registry | nerdctl | kubelet) ;;
	*) die "unknown component '$c' (containerd, runc, docker, runsc, virtiofsd, vsock, qemu, cni, critools, registry, nerdctl, kubelet)" ;;
	esac
done
wanted() {
	local c
	for c in "${components[@]}"; do [[ $c == "$1" ]] && return 0; done
	return 1
}
go="$(find_go)"

build_containerd() {
stamp="$bin/.containerd.stamp"

containerd_module=github.com/containerd/containerd/v2
want="$containerd_module@$CONTAINERD_VERSION tags=$CONTAINERD_BUILD_TAGS"

if [[ -x $bin/containerd && -x $bin/ctr && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
	log "containerd and ctr $CONTAINERD_VERSION already in $bin"
	return 0
fi

log "building containerd and ctr $CONTAINERD_VERSION into $bin (first build takes a few minutes)"
start=$SECONDS
rm -f "$stamp"
# Run outside the repository so its go.mod plays no part; never switch toolchains
# behind the developer's back.
(
	cd /
	export GOBIN="$bin" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
	"$go" install -trimpath \
		-tags "$CONTAINERD_BUILD_TAGS" \
		-ldflags "-X $containerd_module/version.Version=$CONTAINERD_VERSION" \
		"$containerd_module/cmd/containerd@$CONTAINERD_VERSION" \
		"$containerd_module/cmd/ctr@$CONTAINERD_VERSION"
) || die "go install of containerd/ctr $CONTAINERD_VERSION failed (is the Go module proxy reachable? see the output above)"

got="$("$bin/containerd" --version 2>/dev/null || true)"
[[ $got == *" $CONTAINERD_VERSION "* || $got == *" $CONTAINERD_VERSION" ]] ||
	die "built containerd reports '$got', expected version $CONTAINERD_VERSION"
echo "$want" >"$stamp"
log "built $got and ctr in $((SECONDS - start))s"
}

# go_install_into DESTDIR ARGS...: `go install ARGS` into DESTDIR, run outside the
# repository so its go.mod plays no part, never switching toolchains.
go_install_into() {
	local dest=$1
	shift
	(cd / && env GOBIN="$dest" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false "$go" install -trimpath "$@")
}

# module_dir MODULE@VERSION: the module's directory in the module cache (read-only),
# downloaded from the proxy if need be; empty if that failed.
module_dir() {
	(cd / && GOTOOLCHAIN=local "$go" mod download -json "$1" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') || true
}

build_runc() {
	local stamp="$bin/.runc.stamp" want start got
	local runc_module=github.com/opencontainers/runc containerd_module=github.com/containerd/containerd/v2
	want="$runc_module@$RUNC_VERSION tags=$RUNC_BUILD_TAGS; containerd-shim-runc-v2@$CONTAINERD_VERSION"
	if [[ -x $bin/runc && -x $bin/containerd-shim-runc-v2 && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
		log "runc $RUNC_VERSION and containerd-shim-runc-v2 already in $bin"
		return 0
	fi
	log "building runc $RUNC_VERSION and containerd-shim-runc-v2 $CONTAINERD_VERSION into $bin"
	start=$SECONDS
	rm -f "$stamp"
	go_install_into "$bin" -tags "$RUNC_BUILD_TAGS" -ldflags "-X main.version=${RUNC_VERSION#v}" \
		"$runc_module@$RUNC_VERSION" ||
		die "go install of runc $RUNC_VERSION failed (libseccomp-dev missing? run 'make deps'; is the Go module proxy reachable?)"
	go_install_into "$bin" -tags "$CONTAINERD_BUILD_TAGS" \
		-ldflags "-X $containerd_module/version.Version=$CONTAINERD_VERSION" \
		"$containerd_module/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" ||
		die "go install of containerd-shim-runc-v2 $CONTAINERD_VERSION failed (see the output above)"
	got="$("$bin/runc" --version 2>/dev/null | sed -n 1p)"
	[[ $got == "runc version ${RUNC_VERSION#v}" ]] || die "built runc reports '$got', expected ${RUNC_VERSION#v}"
	echo "$want" >"$stamp"
	log "built $got and containerd-shim-runc-v2 in $((SECONDS - start))s"
}

build_runsc() {
	local stamp="$bin/.runsc.stamp" want start got tmp
	local gvisor_module=gvisor.dev/gvisor
	want="$gvisor_module@$GVISOR_VERSION runsc containerd-shim-runsc-v1 static"
	if [[ -x $bin/runsc && -x $bin/containerd-shim-runsc-v1 && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
		log "runsc and containerd-shim-runsc-v1 ($GVISOR_VERSION) already in $bin"
		return 0
	fi
	log "building runsc and containerd-shim-runsc-v1 ($GVISOR_VERSION) into $bin (first build takes a few minutes)"
	start=$SECONDS
	rm -f "$stamp"
	tmp="$(mktemp -d "$dir/.gvisor-build.XXXXXX")"
	# CGO_ENABLED=0: runsc must be static, its sandbox re-executes /proc/self/exe in a
	# chroot without a dynamic loader (a cgo build dies there with "fork/exec
	# /proc/self/exe: no such file or directory").
	if ! (
		export CGO_ENABLED=0
		go_install_into "$tmp" -ldflags "-X $gvisor_module/runsc/version.version=$GVISOR_VERSION" \
			"$gvisor_module/runsc@$GVISOR_VERSION" "$gvisor_module/shim@$GVISOR_VERSION"
	); then
		rm -rf "$tmp"
		die "go install of $gvisor_module runsc/shim $GVISOR_VERSION failed (is the Go module proxy reachable? see the output above)"
	fi
	mv -f "$tmp/runsc" "$bin/runsc"
	mv -f "$tmp/shim" "$bin/containerd-shim-runsc-v1"
	rm -rf "$tmp"
	got="$("$bin/runsc" --version 2>/dev/null | sed -n 1p)"
	[[ $got == "runsc version $GVISOR_VERSION" ]] || die "built runsc reports '$got', expected $GVISOR_VERSION"
	echo "$want" >"$stamp"
	log "built $got and containerd-shim-runsc-v1 in $((SECONDS - start))s"
}

build_docker() {
	local stamp="$bin/.docker.stamp" want start got cli_dir tmp
	local moby_module=github.com/moby/moby/v2 cli_module=github.com/docker/cli
	local cli_version=${DOCKER_CLI_VERSION#v}
	cli_version=${cli_version%+incompatible}
	want="$moby_module@$MOBY_VERSION dockerd docker-proxy tags=$MOBY_BUILD_TAGS; $cli_module@$DOCKER_CLI_VERSION"
	if [[ -x $bin/dockerd && -x $bin/docker-proxy && -x $bin/docker && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
		log "dockerd, docker-proxy ($MOBY_VERSION) and docker $cli_version already in $bin"
		return 0
	fi
	log "building dockerd and docker-proxy ($MOBY_VERSION) and docker $cli_version into $bin (first build takes several minutes)"
	start=$SECONDS
	rm -f "$stamp"
	# moby's hack/make/.go-autogen sets these; GitCommit stays moby's default: the proxy
	# does not say which commit a module version is.
	go_install_into "$bin" -tags "$MOBY_BUILD_TAGS" \
		-ldflags "-X $moby_module/dockerversion.Version=$MOBY_VERSION" \
		"$moby_module/cmd/dockerd@$MOBY_VERSION" "$moby_module/cmd/docker-proxy@$MOBY_VERSION" ||
		die "go install of dockerd/docker-proxy $MOBY_VERSION failed (is the Go module proxy reachable? see the output above)"

	# github.com/docker/cli has no go.mod (only vendor.mod), so `go install ...@version`
	# cannot resolve its imports, and the module zip has no vendor/ (the proxy strips
	# it). Build a copy of the module with vendor.mod/vendor.sum as go.mod/go.sum (as
	# its scripts/with-go-mod.sh does): the dependencies come from the proxy at exactly
	# the versions vendor.mod pins, checked against vendor.sum.
	cli_dir="$(module_dir "$cli_module@$DOCKER_CLI_VERSION")"
	[[ -n $cli_dir && -f $cli_dir/vendor.mod && -f $cli_dir/vendor.sum ]] ||
		die "go mod download $cli_module@$DOCKER_CLI_VERSION failed or has no vendor.mod/vendor.sum (is the Go module proxy reachable?)"
	tmp="$(mktemp -d "$dir/.docker-cli-build.XXXXXX")"
	cp -r "$cli_dir/." "$tmp/"
	chmod -R u+w "$tmp"
	rm -rf "$tmp/vendor"
	mv "$tmp/vendor.mod" "$tmp/go.mod"
	mv "$tmp/vendor.sum" "$tmp/go.sum"
	# Tags and ldflags as its scripts/build/.variables (dynamic build).
	if ! (cd "$tmp" && env GOTOOLCHAIN=local GOFLAGS=-buildvcs=false "$go" build -mod=readonly -trimpath \
		-tags grpcnotrace -ldflags "-X $cli_module/cli/version.Version=$cli_version" \
		-o "$bin/docker" ./cmd/docker); then
		rm -rf "$tmp"
		die "building the docker CLI $DOCKER_CLI_VERSION failed (see the output above)"
	fi
	rm -rf "$tmp"

	got="$("$bin/dockerd" --version 2>/dev/null || true)"
	[[ $got == "Docker version $MOBY_VERSION,"* ]] || die "built dockerd reports '$got', expected version $MOBY_VERSION"
	got="$("$bin/docker" --version 2>/dev/null || true)"
	[[ $got == "Docker version $cli_version,"* ]] || die "built docker CLI reports '$got', expected version $cli_version"
	echo "$want" >"$stamp"
	log "built dockerd, docker-proxy ($MOBY_VERSION) and $got in $((SECONDS - start))s"
}

build_cni() {
	local stamp="$bin/.cni.stamp" want start got p missing=false cni_bin="$dir/cni/bin" tmp
	local cni_module=github.com/containernetworking/plugins pkgs=()
	want="$cni_module@$CNI_PLUGINS_VERSION $CNI_PLUGINS static"
	for p in $CNI_PLUGINS; do
		[[ -x $cni_bin/${p##*/} ]] || missing=true
		pkgs+=("$cni_module/plugins/$p@$CNI_PLUGINS_VERSION")
	done
	if ! $missing && [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
		log "CNI plugins $CNI_PLUGINS_VERSION already in $cni_bin"
		return 0
	fi
	log "building CNI plugins $CNI_PLUGINS_VERSION ($CNI_PLUGINS) into $cni_bin"
	start=$SECONDS
	rm -f "$stamp"
	# Built into a fresh directory that then replaces the old one whole, so the
	# directory never holds plugins of two versions.
	mkdir -p "$dir/cni"
	tmp="$(mktemp -d "$dir/cni/.build.XXXXXX")"
	# Static, as upstream's releases (-extldflags -static there; no cgo is needed).
	if ! (
		export CGO_ENABLED=0
		go_install_into "$tmp" \
			-ldflags "-X $cni_module/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" "${pkgs[@]}"
	); then
		rm -rf "$tmp"
		die "go install of the CNI plugins $CNI_PLUGINS_VERSION failed (is the Go module proxy reachable? see the output above)"
	fi
	rm -rf "$cni_bin"
	mv "$tmp" "$cni_bin"
	chmod 0755 "$cni_bin"
	# A plugin called without CNI_COMMAND prints its build string.
	got="$("$cni_bin/bridge" 2>&1 || true)"
	[[ $got == *"CNI bridge plugin $CNI_PLUGINS_VERSION"* ]] ||
		die "built CNI bridge plugin reports '$got', expected version $CNI_PLUGINS_VERSION"
	echo "$want" >"$stamp"
	log "built CNI plugins $CNI_PLUGINS_VERSION in $((SECONDS - start))s"
}

build_critools() {
	local stamp="$bin/.critools.stamp" want start got src tmp
	local cri_module=sigs.k8s.io/cri-tools
	want="$cri_module@$CRI_TOOLS_VERSION crictl critest static"
	if [[ -x $bin/crictl && -x $bin/critest && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
		log "crictl and critest $CRI_TOOLS_VERSION already in $bin"
		return 0
	fi
	log "building crictl and critest $CRI_TOOLS_VERSION into $bin (first build takes a few minutes)"
	start=$SECONDS
	rm -f "$stamp"
	# As upstream's Makefile: CGO_ENABLED=0, the version in pkg/version, and critest
	# as the test binary of ./cmd/critest (`go install` cannot make a test binary, so
	# both build in the module's directory, with its own go.sum).
	src="$(module_dir "$cri_module@$CRI_TOOLS_VERSION")"
	[[ -n $src && -f $src/go.mod ]] ||
		die "go mod download $cri_module@$CRI_TOOLS_VERSION failed (is the Go module proxy reachable?)"
	tmp="$(mktemp -d "$dir/.cri-tools-build.XXXXXX")"
	if ! (
		cd "$src"
		export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=readonly"
		ldflags="-X $cri_module/pkg/version.Version=${CRI_TOOLS_VERSION#v}"
		"$go" build -trimpath -ldflags "$ldflags" -o "$tmp/crictl" ./cmd/crictl &&
			"$go" test -c -trimpath -ldflags "$ldflags" -o "$tmp/critest" ./cmd/critest
	); then
		rm -rf "$tmp"
		die "building crictl/critest $CRI_TOOLS_VERSION failed (see the output above)"
	fi
	mv -f "$tmp/crictl" "$bin/crictl"
	mv -f "$tmp/critest" "$bin/critest"
	rm -rf "$tmp"
	got="$("$bin/crictl" --version 2>/dev/null || true)"
	[[ $got == "crictl version ${CRI_TOOLS_VERSION#v}" ]] ||
		die "built crictl reports '$got', expected version ${CRI_TOOLS_VERSION#v}"
	# Read whole: with pipefail, `critest --version | grep -q` fails whenever grep exits
	# before critest writes its last line (SIGPIPE), as it did in a CI sim.
	got="$("$bin/critest" --version 2>/dev/null || true)"
	[[ $got == *"critest version: ${CRI_TOOLS_VERSION#v}"* ]] ||
		die "built critest does not report version ${CRI_TOOLS_VERSION#v}: '$(head -n 3 <<<"$got")'"
	echo "$want" >"$stamp"
	log "built $got and critest in $((SECONDS - start))s"
}

build_registry() {
	local stamp="$bin/.registry.stamp" want start got
	local dist_module=github.com/distribution/distribution/v3
	want="$dist_module@$DISTRIBUTION_VERSION registry static"
	if [[ -x $bin/registry && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
		log "registry $DISTRIBUTION_VERSION already in $bin"
		return 0
	fi
	log "building the registry $DISTRIBUTION_VERSION into $bin"
	start=$SECONDS
	rm -f "$stamp"
	# -s -w and the version variables as upstream's Makefile sets them; no storage-driver tags
	# (the filesystem and in-memory drivers are always in).
	(
		export CGO_ENABLED=0
		go_install_into "$bin" \
			-ldflags "-s -w -X $dist_module/version.version=$DISTRIBUTION_VERSION -X $dist_module/version.mainpkg=$dist_module" \
			"$dist_module/cmd/registry@$DISTRIBUTION_VERSION"
	) || die "go install of the registry $DISTRIBUTION_VERSION failed (is the Go module proxy reachable? see the output above)"
	got="$("$bin/registry" --version 2>/dev/null || true)"
	[[ $got == *" $dist_module $DISTRIBUTION_VERSION" ]] ||
		die "built registry reports '$got', expected version $DISTRIBUTION_VERSION"
	echo "$want" >"$stamp"
	log "built the registry $DISTRIBUTION_VERSION in $((SECONDS - start))s"
}

build_nerdctl() {
	local stamp="$bin/.nerdctl.stamp" want start got src tmp
	local nerdctl_module=github.com/containerd/nerdctl/v2 moby_module=github.com/moby/moby/v2
	local tigron=github.com/containerd/nerdctl/mod/tigron@v0.0.0
	want="$nerdctl_module@$NERDCTL_VERSION $moby_module@$NERDCTL_MOBY_VERSION go.sum+$(echo "$NERDCTL_GO_SUM" | sha256sum | cut -c1-16) static"
	if [[ -x $bin/nerdctl && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
		log "nerdctl $NERDCTL_VERSION already in $bin"
		return 0
	fi
	log "building nerdctl $NERDCTL_VERSION (with $moby_module $NERDCTL_MOBY_VERSION) into $bin (first build takes a few minutes)"
	start=$SECONDS
	rm -f "$stamp"
	# `go install ...@version` refuses a module whose go.mod has replace lines to
	# directories, and this one's also names a moby beta the proxy refuses. Build a
	# copy of the module instead (as the docker CLI above), its go.mod edited as
	# hack/versions.env says, its go.sum completed with the pinned lines; -mod=readonly
	# checks every module against that go.sum.
	src="$(module_dir "$nerdctl_module@$NERDCTL_VERSION")"
	[[ -n $src && -f $src/go.mod && -f $src/go.sum ]] ||
		die "go mod download $nerdctl_module@$NERDCTL_VERSION failed (is the Go module proxy reachable?)"
	tmp="$(mktemp -d "$dir/.nerdctl-build.XXXXXX")"
	cp -r "$src/." "$tmp/"
	chmod -R u+w "$tmp"
	# Tags and ldflags as its Makefile (GO_BUILD: static, -s -w, the version). The
	# revision stays "<unknown>": the proxy does not say which commit a version is.
	if ! (
		cd "$tmp"
		export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
		"$go" mod edit -dropreplace "$tigron" -require "$moby_module@$NERDCTL_MOBY_VERSION" &&
			printf '%s\n' "$NERDCTL_GO_SUM" | sed '/^$/d' >>go.sum &&
			CGO_ENABLED=0 "$go" build -mod=readonly -trimpath \
				-ldflags "-s -w -X $nerdctl_module/pkg/version.Version=$NERDCTL_VERSION" \
				-o "$bin/nerdctl" ./cmd/nerdctl
	); then
		rm -rf "$tmp"
		die "building nerdctl $NERDCTL_VERSION failed (a go.sum line missing from NERDCTL_GO_SUM in hack/versions.env? see the output above)"
	fi
	rm -rf "$tmp"
	got="$("$bin/nerdctl" --version 2>/dev/null || true)"
	[[ $got == "nerdctl version ${NERDCTL_VERSION#v}" ]] ||
		die "built nerdctl reports '$got', expected version ${NERDCTL_VERSION#v}"
	echo "$want" >"$stamp"
	log "built $got in $((SECONDS - start))s"
}

build_kubelet() {
	local stamp="$bin/.kubelet.stamp" want start got src tmp m staging ldflags info_time
	local kube_module=k8s.io/kubernetes
	local edits=() kept=() dropped=()
	# The staging modules of release v1.N.M are published as k8s.io/X v0.N.M.
	[[ $KUBERNETES_VERSION =~ ^v1\.[0-9]+\.[0-9]+$ ]] ||
		die "KUBERNETES_VERSION in hack/versions.env is '$KUBERNETES_VERSION': want a release v1.N.M (its staging modules are v0.N.M)"
	staging="v0.${KUBERNETES_VERSION#v1.}"
	want="$kube_module@$KUBERNETES_VERSION cmd/kubelet staging=$staging tags=$KUBELET_BUILD_TAGS go.sum+$(echo "$KUBERNETES_GO_SUM" | sha256sum | cut -c1-16) static"
	if [[ -x $bin/kubelet && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
		log "kubelet $KUBERNETES_VERSION already in $bin"
		return 0
	fi
	log "building the kubelet $KUBERNETES_VERSION into $bin (the first build takes about ten minutes on 2 cores)"
	start=$SECONDS
	rm -f "$stamp"
	src="$(module_dir "$kube_module@$KUBERNETES_VERSION")"
	[[ -n $src && -f $src/go.mod && -f $src/go.sum ]] ||
		die "go mod download $kube_module@$KUBERNETES_VERSION failed (is the Go module proxy reachable?)"
	# The build date is the release's time on the proxy, so a rebuild is the same binary.
	info_time="$(cd / && GOTOOLCHAIN=local "$go" mod download -json "$kube_module@$KUBERNETES_VERSION" |
		sed -n 's/^[[:space:]]*"Info": "\(.*\)",$/\1/p' | xargs -r sed -n 's/.*"Time":"\([^"]*\)".*/\1/p')"
	[[ $info_time =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T ]] ||
		die "no release time in the proxy's .info of $kube_module@$KUBERNETES_VERSION (got '$info_time')"
	tmp="$(mktemp -d "$dir/.kubelet-build.XXXXXX")"
	cp -r "$src/." "$tmp/"
	chmod -R u+w "$tmp"
	# Each "k8s.io/X => ./staging/src/k8s.io/X" of go.mod: the published module when
	# the main module requires it, else dropped (hack/versions.env says why).
	while read -r m; do
		if grep -qE "^[[:space:]]*(require[[:space:]]+)?${m//./\\.}[[:space:]]+v" "$tmp/go.mod"; then
			edits+=(-replace "$m=$m@$staging" -require "$m@$staging")
			kept+=("$m")
		else
			edits+=(-dropreplace "$m")
			dropped+=("$m")
		fi
	done < <(awk '$2 == "=>" && $3 == "./staging/src/" $1 {print $1}' "$tmp/go.mod")
	if ((${#kept[@]} == 0)); then
		rm -rf "$tmp"
		die "$kube_module@$KUBERNETES_VERSION's go.mod has no replace of a required module by ./staging/src/...: its layout changed, see hack/versions.env"
	fi
	log "kubelet: ${#kept[@]} staging modules from the proxy at $staging; replaces dropped: ${dropped[*]:-none}"
	# As upstream's hack/lib/version.sh (the commit stays the default: the proxy
	# does not say which commit a version is) and hack/lib/golang.sh (static, -s -w).
	ldflags="-s -w"
	for m in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $m.gitVersion=$KUBERNETES_VERSION -X $m.gitMajor=1"
		ldflags+=" -X $m.gitMinor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION") -X $m.gitTreeState=archive"
		ldflags+=" -X $m.buildDate=$info_time"
	done
	# GOWORK=off: the module ships a go.work that uses its ./staging/src/...
	# directories, which its zip lacks.
	if ! (
		cd "$tmp"
		export GOTOOLCHAIN=local GOWORK=off GOFLAGS=-buildvcs=false
		"$go" mod edit "${edits[@]}" &&
			printf '%s\n' "$KUBERNETES_GO_SUM" | sed '/^$/d' >>go.sum &&
			CGO_ENABLED=0 "$go" build -mod=readonly -trimpath -tags "${KUBELET_BUILD_TAGS// /,}" \
				-ldflags "$ldflags" -o "$tmp/kubelet" ./cmd/kubelet
	); then
		rm -rf "$tmp"
		die "building the kubelet $KUBERNETES_VERSION failed (a go.sum line missing from KUBERNETES_GO_SUM in hack/versions.env? see the output above)"
	fi
	mv -f "$tmp/kubelet" "$bin/kubelet"
	rm -rf "$tmp"
	got="$("$bin/kubelet" --version 2>/dev/null || true)"
	[[ $got == "Kubernetes $KUBERNETES_VERSION" ]] ||
		die "built kubelet reports '$got', expected Kubernetes $KUBERNETES_VERSION"
	echo "$want" >"$stamp"
	log "built the kubelet ($got) in $((SECONDS - start))s"
}

# fetch_deb POOL_PATH SHA256 DIR PIN: DIR/<name>.deb from deb.debian.org, checked
# against its pinned sha256 (kept while it still matches). PIN names where the
# pin lives, for the error.
fetch_deb() {
	local path=$1 sha=$2 f="$3/$(basename "$1")"
	if [[ -f $f ]] && echo "$sha  $f" | sha256sum -c --status; then return 0; fi
	curl -fsS --retry 3 -o "$f.part" "http://deb.debian.org/debian/$path" ||
		die "fetching http://deb.debian.org/debian/$path failed; see $4"
	echo "$sha  $f.part" | sha256sum -c --status || die "$path: sha256 differs from $4"
	mv -f "$f.part" "$f"
}

build_virtiofsd() {
	local stamp="$bin/.virtiofsd.stamp" want start got work vendor cargo=/usr/bin/cargo
	local locks="$REPO_ROOT/hack/virtiofsd"
	want="virtiofsd $VIRTIOFSD_VERSION debs $(sha256sum <"$locks/debs.lock" | cut -c1-16) cargo $(sha256sum <"$locks/Cargo.lock" | cut -c1-16)"
	if [[ -x $bin/virtiofsd && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
		log "virtiofsd $VIRTIOFSD_VERSION already in $bin"
		return 0
	fi
	# Debian's toolchain, not a rustup one earlier on PATH: the build must be
	# the one CI makes.
	[[ -x $cargo && -x /usr/bin/rustc ]] ||
		die "/usr/bin/cargo or /usr/bin/rustc missing: install rustc-web and cargo-web (make deps)"
	for f in /usr/include/seccomp.h /usr/include/cap-ng.h; do
		[[ -e $f ]] || die "$f missing: install libseccomp-dev and libcap-ng-dev (make deps)"
	done
	log "building virtiofsd $VIRTIOFSD_VERSION into $bin ($("$cargo" --version); takes a few minutes)"
	start=$SECONDS
	rm -f "$stamp"
	work="$dir/virtiofsd-build"
	mkdir -p "$work/debs"
	# 1. The pinned crate packages ("<pool path> <sha256>" per line), kept between
	#    builds while their checksum matches.
	local path sha f
	while read -r path sha; do
		fetch_deb "$path" "$sha" "$work/debs" "hack/virtiofsd/debs.lock (trixie may have replaced it: see hack/virtiofsd/README.md)"
	done <"$locks/debs.lock"
	# 2. Their crate sources (with .cargo-checksum.json) as a directory source
	#    that replaces crates.io.
	rm -rf "$work/root" "$work/src"
	mkdir -p "$work/root"
	for f in "$work"/debs/*.deb; do dpkg-deb -x "$f" "$work/root"; done
	vendor="$work/root/usr/share/cargo/registry"
	cp -a "$vendor/virtiofsd-$VIRTIOFSD_VERSION" "$work/src"
	cp "$locks/Cargo.lock" "$work/src/Cargo.lock"
	mkdir -p "$work/cargo-home"
	cat >"$work/cargo-home/config.toml" <<EOC
[source.crates-io]
replace-with = "debian"
[source.debian]
directory = "$vendor"
[net]
offline = true
EOC
	# 3. Build with the pinned lock file, no network.
	(
		cd "$work/src"
		export CARGO_HOME="$work/cargo-home" RUSTFLAGS="--remap-path-prefix=$work=/build"
		"$cargo" build --release --offline --locked --target-dir "$work/target"
	) || die "cargo build of virtiofsd $VIRTIOFSD_VERSION failed (see the output above)"
	install -m 0755 "$work/target/release/virtiofsd" "$bin/virtiofsd"
	rm -rf "$work/root" "$work/src" "$work/target"
	got="$("$bin/virtiofsd" --version 2>/dev/null | sed -n 1p)"
	[[ $got == "virtiofsd $VIRTIOFSD_VERSION" ]] || die "built virtiofsd reports '$got', expected $VIRTIOFSD_VERSION"
	echo "$want" >"$stamp"
	log "built $got in $((SECONDS - start))s"
}

# vhost-device-vsock is Debian's binary (testing/unstable; it needs glibc 2.34):
# its crate source is in no package the mirror serves (hack/vhost-device-vsock).
build_vsock() {
	local stamp="$bin/.vsock.stamp" want start got path sha tmp
	local locks="$REPO_ROOT/hack/vhost-device-vsock"
	want="vhost-device-vsock $VHOST_DEVICE_VSOCK_VERSION debs $(sha256sum <"$locks/debs.lock" | cut -c1-16)"
	if [[ -x $bin/vhost-device-vsock && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
		log "vhost-device-vsock $VHOST_DEVICE_VSOCK_VERSION already in $bin"
		return 0
	fi
	log "unpacking vhost-device-vsock $VHOST_DEVICE_VSOCK_VERSION (Debian testing) into $bin"
	start=$SECONDS
	rm -f "$stamp"
	# A fixed directory, so what a failed fetch left is cleared by the next run.
	tmp="$dir/vsock-build"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	while read -r path sha; do
		[[ -n $path ]] || continue
		fetch_deb "$path" "$sha" "$tmp" "hack/vhost-device-vsock/debs.lock (testing may have replaced it: see hack/vhost-device-vsock/README.md)"
		dpkg-deb -x "$tmp/$(basename "$path")" "$tmp/root"
	done <"$locks/debs.lock"
	if [[ ! -f $tmp/root/usr/bin/vhost-device-vsock ]]; then
		rm -rf "$tmp"
		die "the packages of hack/vhost-device-vsock/debs.lock have no usr/bin/vhost-device-vsock"
	fi
	install -m 0755 "$tmp/root/usr/bin/vhost-device-vsock" "$bin/vhost-device-vsock"
	rm -rf "$tmp"
	got="$("$bin/vhost-device-vsock" --version 2>&1 | sed -n 1p)" ||
		die "the unpacked vhost-device-vsock does not run: $got (its glibc too old? it needs 2.34)"
	[[ $got == "vhost-device-vsock $VHOST_DEVICE_VSOCK_VERSION" ]] ||
		die "unpacked vhost-device-vsock reports '$got', expected $VHOST_DEVICE_VSOCK_VERSION"
	echo "$want" >"$stamp"
	log "unpacked $got in $((SECONDS - start))s"
}

# QEMU is a package, not a build: the pinned debs are unpacked into DIR/qemu.
# QEMU finds its firmware relative to its binary (DIR/qemu/usr/share/qemu).
build_qemu() {
	local stamp="$bin/.qemu.stamp" want root="$dir/qemu" path sha f got
	want="qemu $QEMU_SNAPSHOT_VERSION $(echo "$QEMU_SNAPSHOT_DEBS" | sha256sum | cut -c1-16)"
	if [[ -x $root/usr/bin/qemu-system-x86_64 && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
		log "QEMU $QEMU_SNAPSHOT_VERSION already in $root"
		return 0
	fi
	log "unpacking QEMU $QEMU_SNAPSHOT_VERSION (bookworm-backports) into $root"
	rm -f "$stamp"
	rm -rf "$root" "$dir/qemu-debs"
	mkdir -p "$root" "$dir/qemu-debs"
	while read -r path sha; do
		[[ -n $path ]] || continue
		fetch_deb "$path" "$sha" "$dir/qemu-debs" "QEMU_SNAPSHOT_DEBS in hack/versions.env (bookworm-backports may have a newer build)"
		dpkg-deb -x "$dir/qemu-debs/$(basename "$path")" "$root"
	done <<<"$QEMU_SNAPSHOT_DEBS"
	rm -rf "$dir/qemu-debs"
	# Debian's 10.0 data package names microvm's firmware (qboot) qboot.rom; QEMU
	# still asks for bios-microvm.bin.
	[[ -e $root/usr/share/qemu/bios-microvm.bin ]] || ln -s qboot.rom "$root/usr/share/qemu/bios-microvm.bin"
	got="$("$root/usr/bin/qemu-system-x86_64" --version 2>&1 | sed -n 1p)" ||
		die "the unpacked QEMU does not run: $got (missing libraries? make deps installs them)"
	[[ $got == *"version $QEMU_SNAPSHOT_VERSION"* ]] || die "unpacked QEMU reports '$got', expected $QEMU_SNAPSHOT_VERSION"
	echo "$want" >"$stamp"
	log "unpacked $got"
}

wanted containerd && build_containerd
wanted runc && build_runc
wanted docker && build_docker
wanted runsc && build_runsc
wanted virtiofsd && build_virtiofsd
wanted vsock && build_vsock
wanted qemu && build_qemu
wanted cni && build_cni
wanted critools && build_critools
wanted registry && build_registry
wanted nerdctl && build_nerdctl
wanted kubelet && build_kubelet
exit 0
