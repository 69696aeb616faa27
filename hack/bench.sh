#!/usr/bin/env bash
# make bench: the same workloads under runc, gVisor's runsc and gondolin, in one
# session on this machine, through a containerd of its own (so `make dev-down` or an
# integration run elsewhere in the tree cannot pull it away mid-run).
#
#   hack/bench.sh [HARNESS FLAGS...]   run the benchmark (bench/cmd/gondolin-bench -h)
#   hack/bench.sh up                   only start the bench containerd (for poking at it:
#                                      CONTAINERD_ADDRESS=/run/gondolin-bench/containerd.sock)
#   hack/bench.sh down                 stop it and clean up
#
# Environment: BENCH_RUNS (default 10), BENCH_QUICK=1 (short smoke run),
# BENCH_RUNTIMES (e.g. runc,gondolin), BENCH_WORKLOADS (e.g. start,exec), more in
# `go run ./cmd/gondolin-bench -h` (in bench/). BENCH_GONDOLIN_OUTPUT: the build tree
# to take the gondolin shim and guest image from (default: this repository's _output).
# BENCH_BASELINE=<git revision>: also build that revision (in a temporary worktree) and
# measure it in the same session as the runtimes gondolin-base and gondolin-snapshot-base,
# alternating with the others, for an optimisation's before/after figures (default
# runtimes then: runc,gondolin-base,gondolin).
#
# The pod workload (BENCH_WORKLOADS=pod, in the default set) runs pods through the bench
# containerd's CRI plugin with crictl: hack/bench.sh gives that containerd the CRI
# handlers runc, gondolin, gondolin-snapshot (and with a baseline gondolin-base,
# gondolin-snapshot-base), a CNI bridge of its own (gondolin-bench0, 10.90.0.0/24: apart
# from the dev environment's), the pause image as its sandbox image, and imports the
# pause and busybox test images into its namespace k8s.io (built with
# integration/testimage/cmd/mktestimage; skipped when BENCH_WORKLOADS leaves pod out).
#
# Results go to .cache/bench/<UTC timestamp>-<git short sha>/ (results.json,
# results.md, results.png, logs); the last line of output names that folder.
#
# results.md ends with "Start phases" when the start workload ran under a gondolin
# runtime: per start figure, the median ms of each phase of a start (shim + containerd:
# the measured total less the shim's steps; the VM's boot with its steps; the
# container's create, guest_create apart; its start) beside runc's median total. The
# phases come from the shim's lines in containerd's log (containerd.log in that
# folder), matched to each run by its container id, which is why this containerd logs
# at debug level; a run whose line is missing is counted as such, not filled in.
#
# The gondolin shim and guest image are copied from _output into .cache/bench/runtime
# first, so a rebuild elsewhere in the tree during the run does not change what is
# measured. Tools (containerd, ctr, runc, runsc) come from .cache/tools/bin.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_RUN_DIR=/run/gondolin-bench
BENCH_CACHE_DIR="$REPO_ROOT/.cache/bench"
BENCH_SOCKET="$BENCH_RUN_DIR/containerd.sock"
BENCH_STATE_DIR="$BENCH_RUN_DIR/containerd"
BENCH_PIDFILE="$BENCH_RUN_DIR/containerd.pid"
BENCH_ROOT_DIR="$BENCH_CACHE_DIR/containerd-root"
BENCH_CONFIG="$BENCH_CACHE_DIR/containerd.toml"
BENCH_RUNTIME_DIR="$BENCH_CACHE_DIR/runtime"
# The harness's scratch space (--work-dir). The harness writes the gondolin-snapshot
# runtimes' configs there (work/<runtime>/config.toml); the CRI handlers of the same
# names read them.
BENCH_WORK_DIR="$BENCH_CACHE_DIR/work"
# CRI: the pods' network, apart from the dev environment's (gondolin-cri0,
# 10.89.0.0/24), with its addresses under the run directory; the pause and test
# images, built for the bench (not the dev environment's archives).
BENCH_CNI_CONF_DIR="$BENCH_CACHE_DIR/cni/net.d"
BENCH_CNI_BRIDGE=gondolin-bench0
BENCH_CNI_SUBNET=10.90.0.0/24
BENCH_IMAGES_DIR="$BENCH_CACHE_DIR/images"
BENCH_CRI_NAMESPACE=k8s.io
# The harness's containerd namespace; containerd-shim-runc-v2 keeps runc's (and
# runsc's) state for it here.
BENCH_NAMESPACE=gondolin-bench
BENCH_RUNC_ROOT="/run/containerd/runc/$BENCH_NAMESPACE"
CONTAINERD="$TOOLS_DIR/bin/containerd"
CTR="$TOOLS_DIR/bin/ctr"
CRICTL="$TOOLS_DIR/bin/crictl"

require_root

ctr_bench() {
	CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1 timeout "${CTR_TIMEOUT:-30}" "$CTR" --address "$BENCH_SOCKET" "$@"
}

# crictl_bench ARGS: crictl against the bench containerd's CRI plugin (no crictl.yaml).
crictl_bench() {
	timeout "${CRICTL_TIMEOUT:-60}" "$CRICTL" --config /dev/null --runtime-endpoint "unix://$BENCH_SOCKET" \
		--image-endpoint "unix://$BENCH_SOCKET" --timeout "${CRICTL_TIMEOUT:-60}s" "$@"
}

bench_lock() {
	mkdir -p "$BENCH_CACHE_DIR"
	exec 8>"$BENCH_CACHE_DIR/.lock"
	flock -n 8 || die "another hack/bench.sh holds $BENCH_CACHE_DIR/.lock (one benchmark at a time)"
}

# bench_containerd_pids: containerd processes running with the bench config.
bench_containerd_pids() {
	local d pid
	for d in /proc/[0-9]*; do
		pid=${d#/proc/}
		[[ "$(exe_of "$pid")" == "$CONTAINERD" ]] || continue
		cmdline_of "$pid" | grep -qxF -- "$BENCH_CONFIG" && echo "$pid"
	done
	return 0
}

# snapshot_runtime: copy the gondolin shim, guest image and agent from _output.
snapshot_runtime() {
	local f src="${BENCH_GONDOLIN_OUTPUT:-$REPO_ROOT/_output}"
	for f in bin/containerd-shim-gondolin-v1 share/gondolin/vmlinuz share/gondolin/initrd.img; do
		[[ -e $src/$f ]] || die "$src/$f missing: run 'make build' first"
	done
	rm -rf "$BENCH_RUNTIME_DIR.new"
	mkdir -p "$BENCH_RUNTIME_DIR.new"
	cp -a "$src/." "$BENCH_RUNTIME_DIR.new/"
	rm -rf "$BENCH_RUNTIME_DIR"
	mv "$BENCH_RUNTIME_DIR.new" "$BENCH_RUNTIME_DIR"
}

write_config() {
	cat >"$BENCH_CONFIG" <<EOF
# Written by hack/bench.sh; edits are overwritten. The benchmark's own containerd.
version = 3
root = "$BENCH_ROOT_DIR"
state = "$BENCH_STATE_DIR"
imports = []

[grpc]
  address = "$BENCH_SOCKET"

[ttrpc]
  address = "$BENCH_SOCKET.ttrpc"

# debug: the gondolin shim logs the steps of a container's create and start
# ("container created", "container started") at debug level, and containerd's
# "creating task" names the container whose VM's "guest agent ready" follows;
# the harness's "Start phases" tables come from those lines. containerd starts
# its shims with -debug at this level (the guest's own debug output stays off: that
# is the runtime config's log_level).
[debug]
  level = "debug"

[plugins]
  [plugins."io.containerd.nri.v1.nri"]
    socket_path = "$BENCH_RUN_DIR/nri.sock"

  # CRI, for the pod workload. The sandbox's oom_score_adj (-998) is kept within
  # what containerd itself may set (root here lacks CAP_SYS_RESOURCE); the pods'
  # network namespaces live under the state directory, which bench_down clears.
  [plugins."io.containerd.cri.v1.runtime"]
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true

  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["$CNI_BIN_DIR"]
    conf_dir = "$BENCH_CNI_CONF_DIR"

  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$PAUSE_IMAGE_NAME"

  # The CRI handlers run what the harness's runtimes of the same names run with
  # ctr (the harness compares them through crictl info before it runs a pod).
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
      BinaryName = "$TOOLS_DIR/bin/runc"
EOF
	# gondolin: the bench copy of the shim, found on containerd's PATH; the
	# snapshot variants with the runtime config the harness writes for them; the
	# baseline's shim by its absolute path.
	local name path config
	for name in gondolin gondolin-snapshot gondolin-base gondolin-snapshot-base; do
		path="" config=""
		if [[ $name == *-base ]]; then
			[[ -n ${BENCH_BASELINE_DIR:-} ]] || continue
			path="$BENCH_BASELINE_DIR/bin/containerd-shim-gondolin-v1"
		fi
		[[ $name == gondolin-snapshot* ]] && config="$BENCH_WORK_DIR/$name/config.toml"
		printf '\n  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.%s]\n    runtime_type = "io.containerd.gondolin.v1"\n' "$name" >>"$BENCH_CONFIG"
		[[ -z $path ]] || printf '    runtime_path = "%s"\n' "$path" >>"$BENCH_CONFIG"
		[[ -z $config ]] || printf '    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.%s.options]\n      ConfigPath = "%s"\n' "$name" "$config" >>"$BENCH_CONFIG"
	done
	write_cni_config
}

# write_cni_config: the pods' network, a bridge with host-local addresses and no
# masquerading (the workload needs no traffic out of the pod).
write_cni_config() {
	mkdir -p "$BENCH_CNI_CONF_DIR"
	cat >"$BENCH_CNI_CONF_DIR/10-gondolin-bench.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "gondolin-bench-cri",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BENCH_CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$BENCH_CNI_SUBNET"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$BENCH_RUN_DIR/cni/networks"
      }
    }
  ]
}
EOF
}

# wants_pod: whether this session runs the pod workload (BENCH_WORKLOADS unset: the
# default set, which has it).
wants_pod() {
	[[ -z ${BENCH_WORKLOADS:-} || ,${BENCH_WORKLOADS// /}, == *,pod,* ]]
}

# cri_image_digest NAME: the digest of image NAME in the CRI namespace ("" if none).
cri_image_digest() {
	ctr_bench -n "$BENCH_CRI_NAMESPACE" images ls "name==$1" | awk 'NR == 2 {print $3}'
}

# import_cri_image NAME ARCHIVE BUILT: import ARCHIVE into the CRI namespace unless
# NAME is there already, complete and unpacked, with the digest mktestimage printed
# (BUILT: its output line "NAME DIGEST …").
import_cri_image() {
	local name=$1 tar=$2 want have
	want="$(awk '{print $2}' <<<"$3")"
	[[ $want == sha256:* ]] || die "mktestimage printed no digest: $3"
	have="$(cri_image_digest "$name")" || die "ctr images ls failed"
	# `ctr image check`: REF TYPE DIGEST STATUS SIZE UNPACKED
	if [[ $have == "$want" ]] && ctr_bench -n "$BENCH_CRI_NAMESPACE" images check "name==$name" |
		awk 'NR == 2 && $4 == "complete" && $NF == "true" {ok = 1} END {exit !ok}'; then
		return 0
	fi
	log "importing $tar into namespace $BENCH_CRI_NAMESPACE"
	CTR_TIMEOUT=120 ctr_bench -n "$BENCH_CRI_NAMESPACE" images import "$tar" >&2 || die "ctr image import $tar failed"
	have="$(cri_image_digest "$name")"
	[[ $have == "$want" ]] || die "after import, $name has digest '${have:-<none>}' in namespace $BENCH_CRI_NAMESPACE, want $want"
}

# cri_images: build the pause image (the CRI sandbox image) and the busybox test
# image and import them into the CRI namespace of the running bench containerd.
cri_images() {
	local go built
	[[ -x $CRICTL ]] || die "crictl not found in $TOOLS_DIR/bin (the pod workload needs it): run 'make tools'"
	[[ -x $CNI_BIN_DIR/bridge && -x $CNI_BIN_DIR/host-local ]] ||
		die "the CNI plugins bridge and host-local are not in $CNI_BIN_DIR (the pod workload needs them): run 'make tools'"
	go="$(find_go)"
	mkdir -p "$BENCH_IMAGES_DIR"
	log "building the CRI images (pause, busybox) for the pod workload"
	built="$(cd "$REPO_ROOT" && "$go" run ./integration/testimage/cmd/mktestimage -pause \
		-out "$BENCH_IMAGES_DIR/pause-oci.tar" -name "$PAUSE_IMAGE_NAME")" ||
		die "building the pause image failed (integration/testimage/cmd/mktestimage -pause)"
	import_cri_image "$PAUSE_IMAGE_NAME" "$BENCH_IMAGES_DIR/pause-oci.tar" "$built"
	built="$(cd "$REPO_ROOT" && "$go" run ./integration/testimage/cmd/mktestimage \
		-out "$BENCH_IMAGES_DIR/busybox-oci.tar" -name "$TEST_IMAGE_NAME")" ||
		die "building the test image failed (integration/testimage/cmd/mktestimage)"
	import_cri_image "$TEST_IMAGE_NAME" "$BENCH_IMAGES_DIR/busybox-oci.tar" "$built"
}

# bench_up LOG: start the bench containerd, logging to LOG.
bench_up() {
	local log_file=$1 pid deadline
	[[ -x $CONTAINERD && -x $CTR ]] || die "containerd/ctr not found in $TOOLS_DIR/bin: run 'make tools' first"
	bench_down_quiet
	mkdir -p "$BENCH_RUN_DIR" "$BENCH_ROOT_DIR"
	write_config
	# The bench copy of the gondolin shim first, then the tools (runc, runsc, their shims).
	PATH="$BENCH_RUNTIME_DIR/bin:$TOOLS_DIR/bin:$PATH" \
		setsid "$CONTAINERD" --config "$BENCH_CONFIG" </dev/null >>"$log_file" 2>&1 8>&- &
	pid=$!
	echo "$pid" >"$BENCH_PIDFILE"
	deadline=$((SECONDS + 60))
	until CTR_TIMEOUT=5 ctr_bench version >/dev/null 2>&1; do
		pid_alive "$pid" || { tail -n 20 "$log_file" >&2; die "bench containerd exited during startup; see $log_file"; }
		((SECONDS < deadline)) || die "bench containerd did not answer within 60s; see $log_file"
		sleep 0.2
	done
	log "bench containerd up (pid $pid) on $BENCH_SOCKET"
}

# bench_down: kill every task, stop containerd, kill leftover shims that served it
# (with their children: qemu, virtiofsd, runsc sandboxes), unmount what is left
# under the run directory. The containerd root (imported images) is kept.
bench_down() {
	local ns t pids=() shims=() kids=() d p addr i m
	if [[ -S $BENCH_SOCKET ]] && CTR_TIMEOUT=5 ctr_bench version >/dev/null 2>&1; then
		# Pods through CRI first, so that their network (CNI addresses, veths,
		# network namespaces) is released the way it was set up.
		if [[ -x $CRICTL ]]; then
			CRICTL_TIMEOUT=180 crictl_bench rmp --all --force >/dev/null 2>&1 || log "warning: crictl rmp --all --force failed"
		fi
		for ns in $(ctr_bench namespaces ls -q 2>/dev/null || true); do
			for t in $(ctr_bench -n "$ns" tasks ls -q 2>/dev/null || true); do
				CTR_TIMEOUT=10 ctr_bench -n "$ns" tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1 || true
				CTR_TIMEOUT=20 ctr_bench -n "$ns" tasks delete -f "$t" >/dev/null 2>&1 || true
			done
			for t in $(ctr_bench -n "$ns" containers ls -q 2>/dev/null || true); do
				CTR_TIMEOUT=20 ctr_bench -n "$ns" containers delete "$t" >/dev/null 2>&1 || true
			done
		done
	fi
	mapfile -t pids < <(bench_containerd_pids)
	if ((${#pids[@]} > 0)); then
		kill -TERM "${pids[@]}" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			p=false
			for d in "${pids[@]}"; do pid_alive "$d" && p=true; done
			$p || break
			sleep 0.1
		done
		kill -KILL "${pids[@]}" 2>/dev/null || true
	fi
	rm -f "$BENCH_PIDFILE"
	# Shims of any runtime whose -address is the bench socket.
	for d in /proc/[0-9]*; do
		p=${d#/proc/}
		[[ "$(exe_of "$p")" == */containerd-shim-* ]] || continue
		addr="$(cmdline_of "$p" | awk 'prev == "-address" {print; exit} {prev = $0}')"
		[[ $addr == "$BENCH_SOCKET" ]] && shims+=("$p")
	done
	if ((${#shims[@]} > 0)); then
		mapfile -t kids < <(descendants_of "${shims[@]}")
		log "killing leftover shims (pid ${shims[*]}) and ${#kids[@]} child process(es)"
		kill -KILL "${shims[@]}" "${kids[@]}" 2>/dev/null || true
	fi
	# The VM pools the bench's gondolin shims started (they outlive containerd and the
	# shims: runtime/vmpool.go).
	stop_vm_pools 10 "$BENCH_RUNTIME_DIR/bin/containerd-shim-gondolin-v1" "${BENCH_BASELINE_DIR:-$BENCH_CACHE_DIR/baseline}/bin/containerd-shim-gondolin-v1"
	# Mounts under our run directory, and under the runc shim's state for our
	# namespace (runsc pins a network namespace there: null-netns).
	for i in 1 2 3; do
		mapfile -t m < <(awk -v b="$BENCH_RUN_DIR" -v r="$BENCH_RUNC_ROOT" '
			$5 == b || index($5, b "/") == 1 || $5 == r || index($5, r "/") == 1 {print length($5) "\t" $5}' /proc/self/mountinfo | sort -rn | cut -f2-)
		((${#m[@]} > 0)) || break
		for d in "${m[@]}"; do
			if ((i < 3)); then umount "$d" 2>/dev/null || true; else umount -l "$d" 2>/dev/null || true; fi
		done
	done
	rm -rf --one-file-system "$BENCH_RUN_DIR" "$BENCH_RUNC_ROOT" 2>/dev/null || log "warning: could not remove $BENCH_RUN_DIR or $BENCH_RUNC_ROOT"
	# The pods' bridge: the CNI bridge plugin leaves it when the last pod goes.
	if ip link show "$BENCH_CNI_BRIDGE" >/dev/null 2>&1; then
		ip link delete "$BENCH_CNI_BRIDGE" type bridge || log "warning: could not delete the bridge $BENCH_CNI_BRIDGE"
	fi
}

bench_down_quiet() {
	bench_down >/dev/null 2>&1 || true
}

# remove_worktree DIR: drop the temporary worktree at DIR, if any.
remove_worktree() {
	git -C "$REPO_ROOT" worktree remove --force "$1" >/dev/null 2>&1 || rm -rf "$1"
	git -C "$REPO_ROOT" worktree prune
}

# build_baseline REV: build revision REV of this repository in a temporary worktree
# and copy its shim and guest image to $BENCH_BASELINE_DIR. Its guest kernel comes
# from this checkout's image cache (built once per kernel config).
build_baseline() {
	local rev=$1 src="$BENCH_CACHE_DIR/baseline-src"
	git -C "$REPO_ROOT" rev-parse --verify --quiet "$rev^{commit}" >/dev/null ||
		die "BENCH_BASELINE=$rev is not a commit of $REPO_ROOT (a git revision such as HEAD~1 or a hash)"
	remove_worktree "$src"
	git -C "$REPO_ROOT" worktree add --quiet --detach "$src" "$rev" || die "git worktree add $src $rev failed"
	mkdir -p "$src/.cache" "$REPO_ROOT/.cache/images"
	ln -s "$REPO_ROOT/.cache/images" "$src/.cache/images"
	log "building the baseline $rev in $src"
	if ! make -C "$src" build >"$BENCH_CACHE_DIR/baseline-build.log" 2>&1; then
		tail -n 20 "$BENCH_CACHE_DIR/baseline-build.log" >&2
		remove_worktree "$src"
		die "building the baseline $rev failed; see $BENCH_CACHE_DIR/baseline-build.log"
	fi
	rm -rf "$BENCH_BASELINE_DIR"
	cp -a "$src/_output" "$BENCH_BASELINE_DIR"
	remove_worktree "$src"
}

case "${1:-}" in
up)
	bench_lock
	snapshot_runtime
	mkdir -p "$BENCH_CACHE_DIR"
	bench_up "$BENCH_CACHE_DIR/containerd.log"
	cri_images
	echo "export CONTAINERD_ADDRESS=$BENCH_SOCKET CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1 CONTAINER_RUNTIME_ENDPOINT=unix://$BENCH_SOCKET IMAGE_SERVICE_ENDPOINT=unix://$BENCH_SOCKET PATH=$BENCH_RUNTIME_DIR/bin:$TOOLS_DIR/bin:\$PATH"
	exit 0
	;;
down)
	bench_lock
	bench_down
	log "bench containerd is down"
	exit 0
	;;
esac

bench_lock
go="$(find_go)"
sha="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo nogit)"
out="$BENCH_CACHE_DIR/$(date -u +%Y%m%dT%H%M%SZ)-$sha"
mkdir -p "$out"

log "building the harness (bench/)"
(
	cd "$REPO_ROOT/bench"
	export GOFLAGS=-buildvcs=false GOTOOLCHAIN=local
	"$go" build -trimpath -o "$out/gondolin-bench" ./cmd/gondolin-bench
	# The download client goes into the bench image: static.
	CGO_ENABLED=0 "$go" build -trimpath -ldflags '-s -w' -o "$out/bench-fetch" ./cmd/bench-fetch
) || die "building the harness (bench/cmd/gondolin-bench, bench/cmd/bench-fetch) failed"
snapshot_runtime
baseline_flags=()
if [[ -n ${BENCH_BASELINE:-} ]]; then
	BENCH_BASELINE_DIR="$BENCH_CACHE_DIR/baseline"
	build_baseline "$BENCH_BASELINE"
	baseline_flags=(--baseline-dir "$BENCH_BASELINE_DIR"
		--baseline-rev "$(git -C "$REPO_ROOT" rev-parse --short "$BENCH_BASELINE^{commit}")")
	export BENCH_RUNTIMES="${BENCH_RUNTIMES:-runc,gondolin-base,gondolin}"
fi
trap 'bench_down >>"$out/teardown.log" 2>&1 || echo "warning: teardown failed, see $out/teardown.log" >&2' EXIT
bench_up "$out/containerd.log"
if wants_pod; then
	cri_images
fi

set +e
PATH="$BENCH_RUNTIME_DIR/bin:$TOOLS_DIR/bin:$PATH" \
	CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1 \
	"$out/gondolin-bench" \
	--address "$BENCH_SOCKET" \
	--namespace "$BENCH_NAMESPACE" \
	--containerd-root "$BENCH_ROOT_DIR" \
	--containerd-log "$out/containerd.log" \
	--tools "$TOOLS_DIR/bin" \
	--runtime-dir "$BENCH_RUNTIME_DIR" \
	--gondolin-from "${BENCH_GONDOLIN_OUTPUT:-$REPO_ROOT/_output}" \
	--repo "$REPO_ROOT" \
	--out "$out" \
	--work-dir "$BENCH_WORK_DIR" \
	--pod-image "$TEST_IMAGE_NAME" \
	--print-dir=false \
	"${baseline_flags[@]}" \
	"$@"
rc=$?
set -e
bench_down >>"$out/teardown.log" 2>&1 || echo "warning: teardown failed, see $out/teardown.log" >&2
trap - EXIT
# The last line of output names the results folder, whatever happened.
echo "results: $out"
exit "$rc"
