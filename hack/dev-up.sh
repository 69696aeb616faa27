#!/usr/bin/env bash
# Start the private developer containerd (make dev-up), a private dockerd on top of it,
# and import the test images (busybox, and the Debian image with curl the egress tests
# use) into both.
#
#   config  .cache/dev/containerd.toml   log  .cache/dev/containerd.log
#   root    .cache/dev/containerd-root   state /run/gondolin-dev/containerd
#   socket  /run/gondolin-dev/containerd.sock (+ .ttrpc), pid /run/gondolin-dev/containerd.pid
#
#   dockerd config .cache/dev/daemon.json  log  .cache/dev/dockerd.log
#           data   .cache/dev/docker-root  exec /run/gondolin-dev/docker
#           socket /run/gondolin-dev/docker.sock, pid /run/gondolin-dev/docker.pid
#
# containerd runs with <repo>/_output/bin first on PATH, so it finds this tree's
# containerd-shim-gondolin-v1. dockerd uses the containerd image store (namespace moby)
# and registers the runtime "gondolin" (io.containerd.gondolin.v1); its default
# runtime is runc. It runs Docker's default bridge network (docker0, iptables,
# published ports through docker-proxy). GONDOLIN_DEV_DOCKER=0 skips dockerd (needed
# when another dockerd runs: both would share docker0 and Docker's iptables chains, so
# dev-up refuses that). Idempotent: a running, healthy private containerd/dockerd with
# the same config is reused. A system containerd is left alone (nothing is shared).
# Afterwards: `source .cache/dev/env` and use ctr or docker as usual.
#
# GONDOLIN_DEV_KUBELET=1 also starts a standalone kubelet (no API server) on the private
# containerd, built by `hack/build-tools.sh .cache/tools kubelet`: it runs the static pods
# in .cache/dev/kubelet/manifests (example: .cache/dev/kubelet/example-pod.yaml); a
# pod annotated io.kubernetes.cri.untrusted-workload: "true" gets gondolin (containerd's
# "untrusted" runtime), any other runc. Everything it writes is below .cache/dev/kubelet
# (log .cache/dev/kubelet.log, pid /run/gondolin-dev/kubelet.pid), its pod cgroups below
# /gondolin-dev-kubelet; it sets kernel tunables (vm.overcommit_memory, kernel.panic,
# kernel.panic_on_oops, ...), recorded first so that dev-down puts them back. Without
# the variable a running dev kubelet is left as it is; dev-down stops it.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

START_TIMEOUT=${GONDOLIN_DEV_START_TIMEOUT:-60} # seconds for containerd (and dockerd) to answer
WITH_DOCKER=true
[[ ${GONDOLIN_DEV_DOCKER:-1} == 0 ]] && WITH_DOCKER=false
WITH_KUBELET=false
[[ ${GONDOLIN_DEV_KUBELET:-0} == 1 ]] && WITH_KUBELET=true

require_root
CONTAINERD="$TOOLS_DIR/bin/containerd"
CTR="$TOOLS_DIR/bin/ctr"
[[ -x $CONTAINERD && -x $CTR ]] || die "containerd/ctr not found in $TOOLS_DIR/bin: run 'make tools' first"
DOCKERD="$TOOLS_DIR/bin/dockerd"
if $WITH_DOCKER; then
	for f in dockerd docker docker-proxy runc containerd-shim-runc-v2; do
		[[ -x $TOOLS_DIR/bin/$f ]] || die "$f not found in $TOOLS_DIR/bin: run 'make tools' first (or GONDOLIN_DEV_DOCKER=0 to go without dockerd)"
	done
	command -v iptables >/dev/null || die "'iptables' not found (dockerd needs it): run 'make deps'"
fi
for cmd in flock timeout setsid ps; do
	command -v "$cmd" >/dev/null || die "'$cmd' not found: run 'make deps'"
done
KUBELET="$TOOLS_DIR/bin/kubelet"
if $WITH_KUBELET; then
	[[ -x $KUBELET ]] || die "kubelet not found in $TOOLS_DIR/bin: run 'hack/build-tools.sh .cache/tools kubelet' first (make tools does not build it by default)"
	command -v curl >/dev/null || die "'curl' not found (the kubelet's health check): run 'make deps'"
fi
if [[ ! -x $OUT_BIN/$SHIM_NAME ]]; then
	log "warning: $OUT_BIN/$SHIM_NAME does not exist yet ('make shim'); containerd will start, but tasks with the gondolin runtime cannot"
fi

# The CRI plugin's registry hosts directory (config_path): a hosts.toml per registry
# host. Empty here; hack/critest.sh writes the files that send registry.k8s.io,
# gcr.io and k8s.gcr.io to its local registry.
registry_hosts_dir="$DEV_CACHE_DIR/certs.d"
mkdir -p "$DEV_RUN_DIR" "$DEV_CACHE_DIR" "$DEV_ROOT_DIR" "$registry_hosts_dir"
dev_lock

# The runtime config of the "gondolin-test" runtime of dockerd (see start_dockerd)
# and of CRI, and what it holds until a test rewrites it (exported as
# GONDOLIN_DEV_TEST_CONFIG): only this comment, i.e. the built-in defaults.
gondolin_test_config="$DEV_CACHE_DIR/gondolin-test.toml"
GONDOLIN_TEST_CONFIG_DEFAULT='# Written by hack/dev-up.sh: the "gondolin-test" docker and CRI runtime. Integration tests rewrite this file and put this comment back (the built-in defaults).'
printf '%s\n' "$GONDOLIN_TEST_CONFIG_DEFAULT" >"$gondolin_test_config"

# --- config ---------------------------------------------------------------------------
# Schema version 3 (containerd 2.x). Everything that could collide with a system
# containerd (root, state, sockets, NRI socket) is private; imports are off so
# /etc/containerd/conf.d does not leak in.
new_config="$(mktemp "$DEV_CACHE_DIR/.containerd.toml.XXXXXX")"
trap 'rm -f "$new_config"' EXIT
cat >"$new_config" <<EOF
# Written by hack/dev-up.sh; edits are overwritten. Private developer containerd.
version = 3
root = "$DEV_ROOT_DIR"
state = "$DEV_STATE_DIR"
imports = []

[grpc]
  address = "$DEV_SOCKET"

[ttrpc]
  address = "$DEV_TTRPC_SOCKET"

[debug]
  level = "debug"

[plugins]
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.gondolin]
    runtime_type = "io.containerd.gondolin.v1"
    # CRI passes only the annotations listed here on to the runtime.
    pod_annotations = ["io.gondolin.*"]
    container_annotations = ["io.gondolin.*"]

  # The integration tests' handler: its runtime config is the file the tests
  # rewrite (GONDOLIN_DEV_TEST_CONFIG, shared with dockerd's gondolin-test runtime).
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.gondolin-test]
    runtime_type = "io.containerd.gondolin.v1"
    pod_annotations = ["io.gondolin.*"]
    container_annotations = ["io.gondolin.*"]
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.gondolin-test.options]
      ConfigPath = "$gondolin_test_config"

  # A kubelet without an API server (the dev kubelet, GONDOLIN_DEV_KUBELET=1) has no
  # RuntimeClasses and sends every pod with runtime_handler "": a pod annotated
  # io.kubernetes.cri.untrusted-workload: "true" gets this runtime, any other runc.
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.untrusted]
    runtime_type = "io.containerd.gondolin.v1"
    pod_annotations = ["io.gondolin.*"]
    container_annotations = ["io.gondolin.*"]

  # CRI: pods on a CNI bridge of their own, with the pause image built here. The
  # sandbox's oom_score_adj (-998) is kept within what containerd itself may set: a
  # containerd that runs with a higher score cannot lower its children's.
  [plugins."io.containerd.cri.v1.runtime"]
    restrict_oom_score_adj = true

  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["$CNI_BIN_DIR"]
    conf_dir = "$DEV_CNI_CONF_DIR"

  # One directory, not containerd's default "/etc/containerd/certs.d:/etc/docker/certs.d":
  # containerd 2.2 pulls CRI images through the transfer service, which takes
  # config_path as a single directory (a list finds no hosts.toml at all).
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "$registry_hosts_dir"

  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$PAUSE_IMAGE_NAME"

  [plugins."io.containerd.nri.v1.nri"]
    socket_path = "$DEV_RUN_DIR/nri.sock"
EOF

# The CRI plugin's network: a bridge with host-local addresses and portmap for
# hostPort, no masquerading (test traffic stays on this machine).
mkdir -p "$DEV_CNI_CONF_DIR"
cni_tmp="$(mktemp "$DEV_CNI_CONF_DIR/.conf.XXXXXX")"
cat >"$cni_tmp" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "gondolin-dev-cri",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$DEV_CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$DEV_CNI_SUBNET"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$DEV_RUN_DIR/cni/networks"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
mv -f "$cni_tmp" "$DEV_CNI_CONF_DIR/10-gondolin-dev.conflist"
config_changed=true
if [[ -f $DEV_CONFIG ]] && cmp -s "$new_config" "$DEV_CONFIG"; then
	config_changed=false
fi

# --- running already? --------------------------------------------------------------------
healthy() {
	CTR_TIMEOUT=5 ctr_dev version >/dev/null 2>&1
}

pid=""
if [[ -f $DEV_PIDFILE ]]; then
	pid="$(cat "$DEV_PIDFILE")"
	if ! pid_alive "$pid" || [[ "$(exe_of "$pid")" != "$CONTAINERD" ]]; then
		log "removing stale pid file (pid $pid is not our containerd)"
		rm -f "$DEV_PIDFILE"
		pid=""
	fi
fi
if [[ -z $pid ]]; then
	# A private containerd whose pid file was lost?
	pid="$(dev_containerd_pids | head -n1)"
	[[ -n $pid ]] && echo "$pid" >"$DEV_PIDFILE"
fi

stop_containerd() {
	local p=$1 i
	log "stopping containerd (pid $p)"
	kill -TERM "$p" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		pid_alive "$p" || return 0
		sleep 0.1
	done
	kill -KILL "$p" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		pid_alive "$p" || return 0
		sleep 0.1
	done
	die "containerd (pid $p) did not exit after SIGKILL"
}

if [[ -n $pid ]]; then
	if $config_changed; then
		log "config changed: restarting the private containerd"
		stop_containerd "$pid"
		pid=""
	elif healthy; then
		log "private containerd already running (pid $pid), reusing it"
	else
		log "private containerd (pid $pid) does not answer: restarting it"
		stop_containerd "$pid"
		pid=""
	fi
fi
mv -f "$new_config" "$DEV_CONFIG"
trap - EXIT

# --- start -----------------------------------------------------------------------------
containerd_started=false
if [[ -z $pid ]]; then
	containerd_started=true
	rm -f "$DEV_PIDFILE"
	if [[ -S $DEV_SOCKET ]]; then
		# No process of ours owns it (checked above); containerd refuses a live one anyway.
		rm -f "$DEV_SOCKET" "$DEV_TTRPC_SOCKET"
	fi
	log "starting containerd $("$CONTAINERD" --version | awk '{print $3}') (log: $DEV_LOG)"
	printf '\n===== hack/dev-up.sh %s =====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$DEV_LOG"
	# setsid: its own session, so neither make's Ctrl-C nor the end of this script's
	# process group takes it down. As a non-leader, setsid does not fork: $! is containerd.
	# 9>&-: containerd (and its shims) must not inherit the dev lock.
	PATH="$OUT_BIN:$TOOLS_DIR/bin:$PATH" \
		setsid "$CONTAINERD" --config "$DEV_CONFIG" </dev/null >>"$DEV_LOG" 2>&1 9>&- &
	pid=$!
	echo "$pid" >"$DEV_PIDFILE"

	deadline=$((SECONDS + START_TIMEOUT))
	until healthy; do
		if ! pid_alive "$pid"; then
			rm -f "$DEV_PIDFILE"
			tail -n 30 "$DEV_LOG" >&2 || true
			die "containerd exited during startup; see $DEV_LOG (last lines above)"
		fi
		if ((SECONDS >= deadline)); then
			tail -n 30 "$DEV_LOG" >&2 || true
			die "containerd (pid $pid) did not answer on $DEV_SOCKET within ${START_TIMEOUT}s; see $DEV_LOG. 'make dev-down' cleans up."
		fi
		sleep 0.2
	done
	[[ "$(exe_of "$pid")" == "$CONTAINERD" ]] || die "pid $pid is not $CONTAINERD (setsid forked?)"
	log "containerd is up (pid $pid) on $DEV_SOCKET"
fi

# --- dockerd ------------------------------------------------------------------------------
# json_str S: S as a JSON string.
json_str() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}

docker_healthy() {
	DOCKER_TIMEOUT=5 docker_dev version --format '{{.Server.Version}}' >/dev/null 2>&1
}

stop_dockerd() {
	local p=$1 i
	log "stopping dockerd (pid $p)"
	kill -TERM "$p" 2>/dev/null || true
	# shutdown-timeout (10 s) for its containers, then its own cleanup.
	for ((i = 0; i < 300; i++)); do
		pid_alive "$p" || return 0
		sleep 0.1
	done
	log "dockerd (pid $p) still running after 30s: SIGKILL"
	kill -KILL "$p" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		pid_alive "$p" || return 0
		sleep 0.1
	done
	die "dockerd (pid $p) did not exit after SIGKILL"
}

# record_host_state: before the dev dockerd first starts, note what it will change on
# the host (IP forwarding, the FORWARD policy, bridges, Docker's iptables chains) so
# that dev-down can put it back. Kept while the file exists (across dockerd restarts).
record_host_state() {
	[[ -f $DEV_DOCKER_HOST_STATE ]] && return 0
	local tmp f cmd chains tables
	tmp="$(mktemp "$DEV_RUN_DIR/.docker-host-state.XXXXXX")"
	{
		echo "# Written by hack/dev-up.sh before the dev dockerd first started; read by hack/dev-down.sh."
		for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv6/conf/all/forwarding \
			/proc/sys/net/ipv6/conf/default/forwarding /proc/sys/net/bridge/bridge-nf-call-iptables \
			/proc/sys/net/bridge/bridge-nf-call-ip6tables; do
			[[ -r $f ]] && echo "sysctl $f $(cat "$f")"
		done
		for cmd in iptables ip6tables; do
			command -v "$cmd" >/dev/null || continue
			echo "policy $cmd $("$cmd" -w -S FORWARD 2>/dev/null | awk '$1 == "-P" {print $3}')"
			chains="$("$cmd-save" 2>/dev/null | awk '/^:DOCKER/ {print substr($1, 2)}' | sort -u | tr '\n' ' ')"
			echo "chains $cmd ${chains:-none}"
		done
		# iptables-nft creates the nf_tables tables it needs (ip/ip6 filter, nat, raw);
		# empty ones that were not there before are deleted again.
		if command -v nft >/dev/null; then
			tables="$(nft list tables 2>/dev/null | awk '$1 == "table" {print $2 ":" $3}' | tr '\n' ' ')"
			echo "nft_tables ${tables:-none}"
		fi
		ip -o link show type bridge 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); print "bridge " $2}'
		[[ -e /run/docker ]] && echo "run_docker existed"
	} >"$tmp"
	mv -f "$tmp" "$DEV_DOCKER_HOST_STATE"
}

start_dockerd() {
	local foreign docker_config_changed dpid deadline
	foreign="$(foreign_dockerd_pids | tr '\n' ' ')"
	[[ -z $foreign ]] || die "another dockerd is running (pid ${foreign% }): the dev dockerd would share docker0 and Docker's iptables chains with it. Stop it, or run with GONDOLIN_DEV_DOCKER=0 to skip the dev dockerd."
	mkdir -p "$DEV_DOCKER_DATA_ROOT" "$DEV_DOCKER_EXEC_ROOT" "$DEV_DOCKER_CLI_CONFIG"

	# Everything dockerd would share with a system Docker (socket, data, exec root, pid
	# file, containerd, cgroups, config) is private. The userland proxy serves published
	# ports on the host's loopback.
	# A second gondolin runtime whose daemon.json options name a runtime
	# config (dockerd hands them to the shim as runtimeoptions ConfigPath):
	# the tests check the shim honours it.
	gondolin_small_config="$DEV_CACHE_DIR/gondolin-small.toml"
	printf '# Written by hack/dev-up.sh: the "gondolin-small" docker runtime.\ndefault_memory_mib = 320\n' >"$gondolin_small_config"
	# A third one, "gondolin-test", whose runtime config the integration tests
	# rewrite (e.g. a guest kernel that cannot boot) and put back: by default it
	# holds only this comment, i.e. the built-in defaults. Each docker container
	# gets its own shim, which reads the file when the container is created.
	new_docker_config="$(mktemp "$DEV_CACHE_DIR/.daemon.json.XXXXXX")"
	trap 'rm -f "$new_docker_config"' EXIT
	cat >"$new_docker_config" <<EOF
{
  "hosts": [$(json_str "$DEV_DOCKER_HOST")],
  "containerd": $(json_str "$DEV_SOCKET"),
  "data-root": $(json_str "$DEV_DOCKER_DATA_ROOT"),
  "exec-root": $(json_str "$DEV_DOCKER_EXEC_ROOT"),
  "pidfile": $(json_str "$DEV_DOCKER_PIDFILE"),
  "cgroup-parent": $(json_str "$DEV_DOCKER_CGROUP_PARENT"),
  "features": {"containerd-snapshotter": true},
  "runtimes": {
    "gondolin": {"runtimeType": "io.containerd.gondolin.v1"},
    "gondolin-small": {"runtimeType": "io.containerd.gondolin.v1", "options": {"ConfigPath": $(json_str "$gondolin_small_config")}},
    "gondolin-test": {"runtimeType": "io.containerd.gondolin.v1", "options": {"ConfigPath": $(json_str "$gondolin_test_config")}}
  },
  "default-runtime": "gondolin",
  "userland-proxy": true,
  "userland-proxy-path": $(json_str "$TOOLS_DIR/bin/docker-proxy"),
  "shutdown-timeout": 10,
  "log-level": "debug"
}
EOF
	docker_config_changed=true
	if [[ -f $DEV_DOCKER_CONFIG ]] && cmp -s "$new_docker_config" "$DEV_DOCKER_CONFIG"; then
		docker_config_changed=false
	fi

	dpid=""
	if [[ -f $DEV_DOCKER_PIDFILE ]]; then
		dpid="$(cat "$DEV_DOCKER_PIDFILE")"
		if ! pid_alive "$dpid" || [[ "$(exe_of "$dpid")" != "$DOCKERD" ]]; then
			dpid=""
		fi
	fi
	[[ -n $dpid ]] || dpid="$(dev_dockerd_pids | head -n1)"
	if [[ -n $dpid ]]; then
		if $docker_config_changed; then
			log "dockerd config changed: restarting the private dockerd"
			stop_dockerd "$dpid"
			dpid=""
		elif $containerd_started; then
			log "containerd was (re)started: restarting the private dockerd (pid $dpid)"
			stop_dockerd "$dpid"
			dpid=""
		elif docker_healthy; then
			log "private dockerd already running (pid $dpid), reusing it"
		else
			log "private dockerd (pid $dpid) does not answer: restarting it"
			stop_dockerd "$dpid"
			dpid=""
		fi
	fi
	mv -f "$new_docker_config" "$DEV_DOCKER_CONFIG"
	trap - EXIT
	[[ -z $dpid ]] || return 0

	# dockerd writes the pid file itself and refuses a stale one.
	rm -f "$DEV_DOCKER_PIDFILE" "$DEV_DOCKER_SOCKET"
	record_host_state
	log "starting dockerd $("$DOCKERD" --version | awk '{print $3}' | tr -d ,) (log: $DEV_DOCKER_LOG)"
	printf '\n===== hack/dev-up.sh %s =====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$DEV_DOCKER_LOG"
	# runc and docker-proxy (and the system's iptables) on its PATH. As for containerd:
	# its own session, and no dev lock.
	PATH="$TOOLS_DIR/bin:$PATH" \
		setsid "$DOCKERD" --config-file "$DEV_DOCKER_CONFIG" </dev/null >>"$DEV_DOCKER_LOG" 2>&1 9>&- &
	dpid=$!
	deadline=$((SECONDS + START_TIMEOUT))
	until docker_healthy; do
		if ! pid_alive "$dpid"; then
			tail -n 30 "$DEV_DOCKER_LOG" >&2 || true
			die "dockerd exited during startup; see $DEV_DOCKER_LOG (last lines above). 'make dev-down' cleans up; GONDOLIN_DEV_DOCKER=0 skips dockerd."
		fi
		if ((SECONDS >= deadline)); then
			tail -n 30 "$DEV_DOCKER_LOG" >&2 || true
			die "dockerd (pid $dpid) did not answer on $DEV_DOCKER_SOCKET within ${START_TIMEOUT}s; see $DEV_DOCKER_LOG. 'make dev-down' cleans up."
		fi
		sleep 0.2
	done
	[[ "$(exe_of "$dpid")" == "$DOCKERD" ]] || die "pid $dpid is not $DOCKERD (setsid forked?)"
	log "dockerd is up (pid $dpid) on $DEV_DOCKER_HOST"
}
if $WITH_DOCKER; then
	start_dockerd
fi

# --- images -----------------------------------------------------------------------------
image_digest() {
	ctr_dev -n "$1" images ls "name==$2" | awk 'NR == 2 {print $3}'
}
image_unpacked() {
	# `ctr image check`: REF TYPE DIGEST STATUS SIZE UNPACKED
	ctr_dev -n "$1" images check "name==$2" | awk 'NR == 2 && $4 == "complete" && $NF == "true" {ok = 1} END {exit !ok}'
}
# import_image NAME DIGEST TAR [NAMESPACE]: import TAR into NAMESPACE (default: default),
# unless NAME is there already with DIGEST, complete and unpacked.
import_image() {
	local name=$1 want=$2 tar=$3 ns=${4:-default} have
	have="$(image_digest "$ns" "$name")" || die "ctr images ls failed"
	if [[ $have == "$want" ]] && image_unpacked "$ns" "$name"; then
		log "image $name ($want) already imported into namespace $ns"
		return 0
	fi
	log "importing $tar into namespace $ns"
	CTR_TIMEOUT=120 ctr_dev -n "$ns" images import "$tar" >&2 ||
		die "ctr image import $tar failed; see $DEV_LOG"
	have="$(image_digest "$ns" "$name")"
	[[ $have == "$want" ]] || die "after import, $name has digest '${have:-<none>}' in namespace $ns, want $want"
	image_unpacked "$ns" "$name" || die "$name is not complete and unpacked in namespace $ns after import (ctr image check)"
}
# docker_load_image NAME DIGEST TAR: `docker load` TAR into the dev dockerd, unless NAME
# is there already with DIGEST (with the containerd image store, an image's ID is the
# digest of its manifest, as in containerd).
docker_load_image() {
	local name=$1 want=$2 tar=$3 have
	$WITH_DOCKER || return 0
	have="$(docker_dev image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)"
	if [[ $have == "$want" ]]; then
		log "image $name ($want) already in dockerd"
		return 0
	fi
	log "loading $tar into dockerd"
	DOCKER_TIMEOUT=300 docker_dev load -i "$tar" >&2 || die "docker load -i $tar failed; see $DEV_DOCKER_LOG"
	have="$(docker_dev image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)"
	[[ $have == "$want" ]] || die "after docker load, $name has ID '${have:-<none>}' in dockerd, want $want"
}

go="$(find_go)"
log "building the test image $TEST_IMAGE_NAME"
built="$(cd "$REPO_ROOT" && "$go" run ./integration/testimage/cmd/mktestimage -out "$TEST_IMAGE_TAR" -name "$TEST_IMAGE_NAME")" ||
	die "building the test image failed (integration/testimage/cmd/mktestimage)"
want_digest="$(awk '{print $2}' <<<"$built")"
[[ $want_digest == sha256:* ]] || die "mktestimage printed no digest: $built"
import_image "$TEST_IMAGE_NAME" "$want_digest" "$TEST_IMAGE_TAR"
docker_load_image "$TEST_IMAGE_NAME" "$want_digest" "$TEST_IMAGE_TAR"
# CRI's namespace: the pods' images.
import_image "$TEST_IMAGE_NAME" "$want_digest" "$TEST_IMAGE_TAR" k8s.io
log "building the pause image $PAUSE_IMAGE_NAME"
built="$(cd "$REPO_ROOT" && "$go" run ./integration/testimage/cmd/mktestimage -pause -out "$PAUSE_IMAGE_TAR" -name "$PAUSE_IMAGE_NAME")" ||
	die "building the pause image failed (integration/testimage/cmd/mktestimage -pause)"
want_digest="$(awk '{print $2}' <<<"$built")"
[[ $want_digest == sha256:* ]] || die "mktestimage printed no digest: $built"
import_image "$PAUSE_IMAGE_NAME" "$want_digest" "$PAUSE_IMAGE_TAR" k8s.io

# debootstrap runs only when the cache has no archive for the current recipe (about a
# minute, from deb.debian.org); mkdistroimage prints "NAME DIGEST ARCHIVE".
log "building the distro image $DISTRO_IMAGE_NAME (cached in $IMAGES_CACHE_DIR)"
built="$(cd "$REPO_ROOT" && "$go" run ./integration/distroimage/cmd/mkdistroimage -cache "$IMAGES_CACHE_DIR" -name "$DISTRO_IMAGE_NAME")" ||
	die "building the distro image failed (integration/distroimage/cmd/mkdistroimage)"
read -r _ want_digest DISTRO_IMAGE_TAR <<<"$built"
[[ $want_digest == sha256:* && -f $DISTRO_IMAGE_TAR ]] || die "mkdistroimage printed no digest and archive: $built"
import_image "$DISTRO_IMAGE_NAME" "$want_digest" "$DISTRO_IMAGE_TAR"
import_image "$DISTRO_IMAGE_NAME" "$want_digest" "$DISTRO_IMAGE_TAR" k8s.io
docker_load_image "$DISTRO_IMAGE_NAME" "$want_digest" "$DISTRO_IMAGE_TAR"

# --- kubelet (GONDOLIN_DEV_KUBELET=1) -------------------------------------------------------
kubelet_healthy() {
	[[ "$(curl -fsS --max-time 5 "http://127.0.0.1:$DEV_KUBELET_HEALTHZ_PORT/healthz" 2>/dev/null)" == ok ]]
}

stop_kubelet() {
	local p=$1 i
	log "stopping the kubelet (pid $p)"
	kill -TERM "$p" 2>/dev/null || true
	for ((i = 0; i < 300; i++)); do
		pid_alive "$p" || return 0
		sleep 0.1
	done
	kill -KILL "$p" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		pid_alive "$p" || return 0
		sleep 0.1
	done
	die "the kubelet (pid $p) did not exit after SIGKILL"
}

# record_kubelet_host_state: before the dev kubelet first starts, note the kernel
# tunables it will change, for dev-down. Kept while the file exists.
record_kubelet_host_state() {
	[[ -f $DEV_KUBELET_HOST_STATE ]] && return 0
	local tmp f
	tmp="$(mktemp "$DEV_RUN_DIR/.kubelet-host-state.XXXXXX")"
	{
		echo "# Written by hack/dev-up.sh before the dev kubelet first started; read by hack/dev-down.sh."
		for f in $KUBELET_TUNABLES; do
			[[ -r /proc/sys/$f ]] && echo "sysctl /proc/sys/$f $(cat "/proc/sys/$f")"
		done
	} >"$tmp"
	mv -f "$tmp" "$DEV_KUBELET_HOST_STATE"
}

start_kubelet() {
	local foreign="" d p kpid new_kubelet_config kubelet_config_changed deadline h f
	for d in /proc/[0-9]*; do
		p=${d#/proc/}
		[[ "$(exe_of "$p")" == */kubelet ]] || continue
		cmdline_of "$p" | grep -qxF -- "$DEV_KUBELET_CONFIG" && continue
		foreign+="$p "
	done
	[[ -z $foreign ]] || die "another kubelet is running (pid ${foreign% }): the dev kubelet would share the host's kernel tunables (and perhaps its health port) with it. Stop it, or run without GONDOLIN_DEV_KUBELET=1."
	mkdir -p "$DEV_KUBELET_MANIFESTS" "$DEV_KUBELET_DIR/root" "$DEV_KUBELET_DIR/pki" "$DEV_KUBELET_DIR/pod-logs" "$DEV_KUBELET_DIR/volume-plugins"

	# Standalone (no --kubeconfig): static pods only. failCgroupV1: false and
	# cgroupfs for hosts like this one (cgroup v1, no systemd); no server (the
	# health check alone, on the loopback); no iptables chains; image garbage
	# collection off and eviction thresholds low, so that it never removes the dev
	# images or evicts a pod on a busy machine.
	new_kubelet_config="$(mktemp "$DEV_KUBELET_DIR/.config.yaml.XXXXXX")"
	trap 'rm -f "$new_kubelet_config"' EXIT
	cat >"$new_kubelet_config" <<KUBELET_CONFIG
# Written by hack/dev-up.sh (GONDOLIN_DEV_KUBELET=1); edits are overwritten.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: "$DEV_KUBELET_MANIFESTS"
fileCheckFrequency: 5s
containerRuntimeEndpoint: "unix://$DEV_SOCKET"
cgroupDriver: cgroupfs
cgroupRoot: "$DEV_KUBELET_CGROUP_ROOT"
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
failCgroupV1: false
failSwapOn: false
protectKernelDefaults: false
makeIPTablesUtilChains: false
localStorageCapacityIsolation: false
enableServer: false
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $DEV_KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
podLogsDir: "$DEV_KUBELET_DIR/pod-logs"
volumePluginDir: "$DEV_KUBELET_DIR/volume-plugins"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 1Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%}
KUBELET_CONFIG
	kubelet_config_changed=true
	if [[ -f $DEV_KUBELET_CONFIG ]] && cmp -s "$new_kubelet_config" "$DEV_KUBELET_CONFIG"; then
		kubelet_config_changed=false
	fi

	kpid=""
	if [[ -f $DEV_KUBELET_PIDFILE ]]; then
		kpid="$(cat "$DEV_KUBELET_PIDFILE")"
		if ! pid_alive "$kpid" || [[ "$(exe_of "$kpid")" != "$KUBELET" ]]; then
			kpid=""
		fi
	fi
	[[ -n $kpid ]] || kpid="$(dev_kubelet_pids | head -n1)"
	if [[ -n $kpid ]]; then
		if $kubelet_config_changed; then
			log "kubelet config changed: restarting the dev kubelet"
			stop_kubelet "$kpid"
			kpid=""
		elif kubelet_healthy; then
			log "dev kubelet already running (pid $kpid), reusing it"
		else
			log "dev kubelet (pid $kpid) does not answer: restarting it"
			stop_kubelet "$kpid"
			kpid=""
		fi
	fi
	mv -f "$new_kubelet_config" "$DEV_KUBELET_CONFIG"
	trap - EXIT

	# An example static pod (outside the manifest directory): copy it there to run it.
	cat >"$DEV_KUBELET_DIR/example-pod.yaml" <<EXAMPLE_POD
# Written by hack/dev-up.sh: copy into $DEV_KUBELET_MANIFESTS to run it on gondolin.
apiVersion: v1
kind: Pod
metadata:
  name: example
  annotations:
    # The dev kubelet has no RuntimeClasses: this picks containerd's "untrusted"
    # runtime, gondolin. Without it the pod runs on runc.
    io.kubernetes.cri.untrusted-workload: "true"
spec:
  # What a RuntimeClass would add (there is none here): the VM beside the
  # containers' limits, memory_overhead_mib + host_memory_overhead_mib. When every
  # container has a memory limit, the kubelet caps the pod's cgroup, which holds
  # QEMU, at their sum plus this; without it the host OOM-kills QEMU.
  overhead: {memory: 288Mi}
  containers:
  - name: web
    image: $TEST_IMAGE_NAME
    imagePullPolicy: Never
    command: ["httpd", "-f", "-p", "8080", "-h", "/etc"]
    resources: {limits: {memory: 64Mi}}
EXAMPLE_POD
	[[ -z $kpid ]] || return 0

	rm -f "$DEV_KUBELET_PIDFILE"
	record_kubelet_host_state
	# Its cgroup root must exist in every hierarchy; a new v1 cpuset cgroup gets
	# its parent's CPUs and memory nodes, without which nothing could join it.
	while read -r h; do
		mkdir -p "$h$DEV_KUBELET_CGROUP_ROOT"
		if [[ ${h##*/} == cpuset ]]; then
			for f in cpuset.cpus cpuset.mems; do
				[[ -n "$(cat "$h$DEV_KUBELET_CGROUP_ROOT/$f")" ]] || cat "$h/$f" >"$h$DEV_KUBELET_CGROUP_ROOT/$f"
			done
		fi
	done < <(cgroup_hierarchies)
	log "starting the kubelet $("$KUBELET" --version | awk '{print $2}') (log: $DEV_KUBELET_LOG)"
	printf '\n===== hack/dev-up.sh %s =====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$DEV_KUBELET_LOG"
	# As containerd: its own session, no dev lock.
	setsid "$KUBELET" --config "$DEV_KUBELET_CONFIG" --root-dir "$DEV_KUBELET_DIR/root" \
		--cert-dir "$DEV_KUBELET_DIR/pki" --v 2 </dev/null >>"$DEV_KUBELET_LOG" 2>&1 9>&- &
	kpid=$!
	echo "$kpid" >"$DEV_KUBELET_PIDFILE"
	deadline=$((SECONDS + START_TIMEOUT))
	until kubelet_healthy; do
		if ! pid_alive "$kpid"; then
			rm -f "$DEV_KUBELET_PIDFILE"
			tail -n 30 "$DEV_KUBELET_LOG" >&2 || true
			die "the kubelet exited during startup; see $DEV_KUBELET_LOG (last lines above). 'make dev-down' cleans up."
		fi
		if ((SECONDS >= deadline)); then
			tail -n 30 "$DEV_KUBELET_LOG" >&2 || true
			die "the kubelet (pid $kpid) did not answer on 127.0.0.1:$DEV_KUBELET_HEALTHZ_PORT within ${START_TIMEOUT}s; see $DEV_KUBELET_LOG. 'make dev-down' cleans up."
		fi
		sleep 0.5
	done
	[[ "$(exe_of "$kpid")" == "$KUBELET" ]] || die "pid $kpid is not $KUBELET (setsid forked?)"
	log "the kubelet is up (pid $kpid); static pods: $DEV_KUBELET_MANIFESTS"
}
if $WITH_KUBELET; then
	start_kubelet
else
	kpid="$(dev_kubelet_pids | head -n1)"
	[[ -z $kpid ]] || log "the dev kubelet (pid $kpid) keeps running without GONDOLIN_DEV_KUBELET=1; make dev-down stops it"
fi

# --- env file -----------------------------------------------------------------------------
env_tmp="$(mktemp "$DEV_CACHE_DIR/.env.XXXXXX")"
# shellcheck disable=SC2016 # '$PATH' is expanded when the env file is sourced
{
	echo "# Written by hack/dev-up.sh: source it to talk to the private developer containerd."
	printf 'export CONTAINERD_ADDRESS=%q\n' "$DEV_SOCKET"
	echo "export CONTAINERD_NAMESPACE=default"
	printf 'export GONDOLIN_TEST_IMAGE=%q\n' "$TEST_IMAGE_NAME"
	printf 'export GONDOLIN_TEST_IMAGE_TAR=%q\n' "$TEST_IMAGE_TAR"
	printf 'export GONDOLIN_DISTRO_IMAGE=%q\n' "$DISTRO_IMAGE_NAME"
	printf 'export GONDOLIN_DISTRO_IMAGE_TAR=%q\n' "$DISTRO_IMAGE_TAR"
	printf 'export GONDOLIN_CONTAINERD_ROOT=%q\n' "$DEV_ROOT_DIR"
	printf 'export GONDOLIN_CONTAINERD_STATE=%q\n' "$DEV_STATE_DIR"
	printf 'export GONDOLIN_DEV_CONTAINERD_LOG=%q\n' "$DEV_LOG"
	echo "# CRI (crictl, critest): the same containerd; pods get the pause image below."
	printf 'export CONTAINER_RUNTIME_ENDPOINT=%q\n' "unix://$DEV_SOCKET"
	printf 'export IMAGE_SERVICE_ENDPOINT=%q\n' "unix://$DEV_SOCKET"
	printf 'export GONDOLIN_PAUSE_IMAGE=%q\n' "$PAUSE_IMAGE_NAME"
	printf 'export GONDOLIN_CNI_SUBNET=%q\n' "$DEV_CNI_SUBNET"
	printf 'export GONDOLIN_DEV_TEST_CONFIG=%q\n' "$gondolin_test_config"
	printf 'export GONDOLIN_REGISTRY_HOSTS_DIR=%q\n' "$registry_hosts_dir"
	if $WITH_DOCKER; then
		echo "# The private dockerd (runtimes: gondolin, the default, gondolin-small, gondolin-test and runc)."
		printf 'export DOCKER_HOST=%q\n' "$DEV_DOCKER_HOST"
		printf 'export GONDOLIN_DEV_DOCKERD_LOG=%q\n' "$DEV_DOCKER_LOG"
	fi
	echo "# The kubelet of the standalone-kubelet tests (hack/build-tools.sh .cache/tools kubelet)."
	printf 'export GONDOLIN_KUBELET=%q\n' "$KUBELET"
	if $WITH_KUBELET; then
		echo "# The dev kubelet (GONDOLIN_DEV_KUBELET=1): its static pods and log."
		printf 'export GONDOLIN_DEV_KUBELET_MANIFESTS=%q\n' "$DEV_KUBELET_MANIFESTS"
		printf 'export GONDOLIN_DEV_KUBELET_LOG=%q\n' "$DEV_KUBELET_LOG"
	fi
	echo "# make tools' CNI plugins, for nerdctl --cni-path (nerdctl, crictl, critest and registry are on PATH)."
	printf 'export GONDOLIN_CNI_BIN_DIR=%q\n' "$TOOLS_CNI_BIN_DIR"
	echo "# ctr would warn on every call that cgroup v1 is deprecated (this host has v1)."
	echo "export CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1"
	# Prepend once: sourcing the file again does not grow PATH.
	printf 'case ":$PATH:" in\n'
	printf '  %q*) ;;\n' ":$OUT_BIN:$TOOLS_DIR/bin:"
	printf '  *) export PATH=%q"$PATH" ;;\n' "$OUT_BIN:$TOOLS_DIR/bin:"
	printf 'esac\n'
} >"$env_tmp"
mv -f "$env_tmp" "$DEV_ENV_FILE"

log "ready: source $DEV_ENV_FILE  (then e.g. ctr run --rm --runtime io.containerd.gondolin.v1 \$GONDOLIN_TEST_IMAGE t1 true)"
if $WITH_DOCKER; then
	log "       or: docker run --rm [--runtime gondolin] \$GONDOLIN_TEST_IMAGE true"
fi
