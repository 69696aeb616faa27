#!/usr/bin/env bash
# Build the developer tools the project needs from the Go module proxy into DIR/bin:
# containerd and ctr at the version pinned in hack/versions.env.
#
# Usage: hack/build-tools.sh DIR      (make tools: DIR = .cache/tools)
#
# Skips the build when DIR/bin already holds both binaries built for the pinned
# version (recorded in DIR/bin/.containerd.stamp).
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=hack/versions.env
source "$REPO_ROOT/hack/versions.env"

[[ $# -eq 1 ]] || die "usage: $0 DIR (tools are installed into DIR/bin)"
mkdir -p "$1/bin"
dir="$(cd "$1" && pwd)"
bin="$dir/bin"
stamp="$bin/.containerd.stamp"

containerd_module=github.com/containerd/containerd/v2
want="$containerd_module@$CONTAINERD_VERSION tags=$CONTAINERD_BUILD_TAGS"

if [[ -x $bin/containerd && -x $bin/ctr && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
	log "containerd and ctr $CONTAINERD_VERSION already in $bin"
	exit 0
fi

go="$(find_go)"
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
