# shellcheck shell=bash
# Common helpers for hack/*.sh. Source it; it sets REPO_ROOT, the paths of the private
# developer containerd and a few functions.
# shellcheck disable=SC2034 # the variables are for the scripts that source this file

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

# Private developer containerd (hack/dev-up.sh / hack/dev-down.sh). GONDOLIN_DEV_RUN_DIR
# and GONDOLIN_DEV_CACHE_DIR move a second, independent instance elsewhere (e.g. to try
# the scripts while the usual one is in use); dev-down removes both directories.
DEV_RUN_DIR="${GONDOLIN_DEV_RUN_DIR:-/run/gondolin-dev}"
DEV_CACHE_DIR="${GONDOLIN_DEV_CACHE_DIR:-$REPO_ROOT/.cache/dev}"
[[ $DEV_RUN_DIR == /[!/]* && $DEV_RUN_DIR != */ ]] ||
	{ echo "GONDOLIN_DEV_RUN_DIR must be an absolute path below /, not '$DEV_RUN_DIR'" >&2; exit 1; }
[[ $DEV_CACHE_DIR == /[!/]* && $DEV_CACHE_DIR != */ ]] ||
	{ echo "GONDOLIN_DEV_CACHE_DIR must be an absolute path below /, not '$DEV_CACHE_DIR'" >&2; exit 1; }
DEV_SOCKET="$DEV_RUN_DIR/containerd.sock"
DEV_TTRPC_SOCKET="$DEV_RUN_DIR/containerd.sock.ttrpc"
DEV_PIDFILE="$DEV_RUN_DIR/containerd.pid"
DEV_STATE_DIR="$DEV_RUN_DIR/containerd"
DEV_ROOT_DIR="$DEV_CACHE_DIR/containerd-root"
DEV_CONFIG="$DEV_CACHE_DIR/containerd.toml"
DEV_LOG="$DEV_CACHE_DIR/containerd.log"
DEV_ENV_FILE="$DEV_CACHE_DIR/env"
# Private developer dockerd, a client of the private containerd (hack/dev-up.sh).
DEV_DOCKER_SOCKET="$DEV_RUN_DIR/docker.sock"
DEV_DOCKER_HOST="unix://$DEV_DOCKER_SOCKET"
DEV_DOCKER_PIDFILE="$DEV_RUN_DIR/docker.pid"
DEV_DOCKER_EXEC_ROOT="$DEV_RUN_DIR/docker"
DEV_DOCKER_DATA_ROOT="$DEV_CACHE_DIR/docker-root"
DEV_DOCKER_CONFIG="$DEV_CACHE_DIR/daemon.json"
DEV_DOCKER_LOG="$DEV_CACHE_DIR/dockerd.log"
# The docker CLI's own config directory for the scripts' calls (not the user's ~/.docker).
DEV_DOCKER_CLI_CONFIG="$DEV_CACHE_DIR/docker-cli"
# Parent cgroup of the dev dockerd's containers: its own, so dev-down can remove it.
DEV_DOCKER_CGROUP_PARENT=gondolin-dev-docker
# What the host's network settings were before the dev dockerd first started (it
# enables IPv4 forwarding and sets the FORWARD policy to DROP); dev-down restores them.
# In /run: it lives exactly as long as the kernel state it describes.
DEV_DOCKER_HOST_STATE="$DEV_RUN_DIR/docker-host-state"
TOOLS_DIR="$REPO_ROOT/.cache/tools"
# The CNI plugins (hack/build-tools.sh cni) live apart from TOOLS_DIR/bin: a CNI
# path holds plugins only.
TOOLS_CNI_BIN_DIR="$TOOLS_DIR/cni/bin"
OUT_BIN="$REPO_ROOT/_output/bin"
SHIM_NAME=containerd-shim-gondolin-v1
IMAGES_CACHE_DIR="$REPO_ROOT/.cache/images"
TEST_IMAGE_NAME=docker.io/gondolin/busybox:latest
TEST_IMAGE_TAR="$IMAGES_CACHE_DIR/busybox-oci.tar"
# The pause image of the CRI pods (the private containerd's pinned sandbox image) and
# the CNI network its CRI plugin gives them: plugins from `make tools`, a bridge of its
# own, addresses kept under the run directory (not /var/lib/cni).
PAUSE_IMAGE_NAME=docker.io/gondolin/pause:latest
PAUSE_IMAGE_TAR="$IMAGES_CACHE_DIR/pause-oci.tar"
CNI_BIN_DIR="$TOOLS_DIR/cni/bin"
DEV_CNI_CONF_DIR="$DEV_CACHE_DIR/cni/net.d"
DEV_CNI_BRIDGE=gondolin-cri0
DEV_CNI_SUBNET=10.89.0.0/24
# The optional standalone kubelet of the dev environment (GONDOLIN_DEV_KUBELET=1
# hack/dev-up.sh): static pods from DEV_KUBELET_MANIFESTS on the private containerd,
# everything it writes below DEV_KUBELET_DIR, its pod cgroups below
# DEV_KUBELET_CGROUP_ROOT (in every hierarchy), its health check on 127.0.0.1 only.
# The kernel tunables it changes are recorded in DEV_KUBELET_HOST_STATE first, for
# dev-down to put back.
DEV_KUBELET_DIR="$DEV_CACHE_DIR/kubelet"
DEV_KUBELET_MANIFESTS="$DEV_KUBELET_DIR/manifests"
DEV_KUBELET_CONFIG="$DEV_KUBELET_DIR/config.yaml"
DEV_KUBELET_LOG="$DEV_CACHE_DIR/kubelet.log"
DEV_KUBELET_PIDFILE="$DEV_RUN_DIR/kubelet.pid"
DEV_KUBELET_HOST_STATE="$DEV_RUN_DIR/kubelet-host-state"
DEV_KUBELET_CGROUP_ROOT=/gondolin-dev-kubelet
DEV_KUBELET_HEALTHZ_PORT=10248
# The sysctls the kubelet sets at its start (pkg/kubelet/cm setupKernelTunables).
KUBELET_TUNABLES="vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes"
# The distro image (integration/distroimage) is cached in IMAGES_CACHE_DIR under a name
# with its cache key; mkdistroimage prints the path.
DISTRO_IMAGE_NAME=docker.io/gondolin/debian-curl:latest

_hack_script="$(basename "${0:-hack}")"

log() { printf '[%s] %s\n' "$_hack_script" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$_hack_script" "$*" >&2; exit 1; }

# find_go prints the path of the go command (PATH first, then /usr/local/go/bin/go)
# or fails with a clear message.
find_go() {
	if command -v go >/dev/null 2>&1; then
		command -v go
	elif [[ -x /usr/local/go/bin/go ]]; then
		echo /usr/local/go/bin/go
	else
		die "Go is not installed: neither 'go' on PATH nor /usr/local/go/bin/go exists. Install Go (see go.mod for the version) into /usr/local/go."
	fi
}

require_root() {
	[[ $(id -u) -eq 0 ]] || die "must run as root (containerd, mounts and /run need it)"
}

# pid_alive PID: true when PID names a live process (not a zombie).
pid_alive() {
	local pid=$1 state
	[[ -n $pid && -d /proc/$pid ]] || return 1
	state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || return 1
	[[ -n $state && $state != Z ]]
}

# exe_of PID: the executable of PID, without the " (deleted)" suffix the kernel adds
# when the file was replaced (e.g. the shim rebuilt while running). Empty if unknown.
exe_of() {
	local exe
	exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 0
	echo "${exe% (deleted)}"
}

# cmdline_of PID: the arguments of PID, one per line.
cmdline_of() {
	tr '\0' '\n' 2>/dev/null <"/proc/$1/cmdline" || true
}

# dev_containerd_pids: pids of containerd processes running with the private dev config
# (found through /proc, in case the pid file is gone).
dev_containerd_pids() {
	local d pid
	for d in /proc/[0-9]*; do
		pid=${d#/proc/}
		[[ "$(exe_of "$pid")" == "$TOOLS_DIR/bin/containerd" ]] || continue
		cmdline_of "$pid" | grep -qxF -- "$DEV_CONFIG" && echo "$pid"
	done
	return 0
}

# dev_dockerd_pids: pids of dockerd processes running with the private dev config.
dev_dockerd_pids() {
	local d pid
	for d in /proc/[0-9]*; do
		pid=${d#/proc/}
		[[ "$(exe_of "$pid")" == "$TOOLS_DIR/bin/dockerd" ]] || continue
		cmdline_of "$pid" | grep -qxF -- "$DEV_DOCKER_CONFIG" && echo "$pid"
	done
	return 0
}

# foreign_dockerd_pids: pids of dockerd processes that are not the private dev one.
foreign_dockerd_pids() {
	local d pid exe
	for d in /proc/[0-9]*; do
		pid=${d#/proc/}
		exe="$(exe_of "$pid")"
		[[ ${exe##*/} == dockerd ]] || continue
		[[ $exe == "$TOOLS_DIR/bin/dockerd" ]] && cmdline_of "$pid" | grep -qxF -- "$DEV_DOCKER_CONFIG" && continue
		echo "$pid"
	done
	return 0
}

# descendants_of PID...: every process below the given ones, deepest last.
descendants_of() {
	local parents=("$@") children p
	while ((${#parents[@]} > 0)); do
		children=()
		for p in "${parents[@]}"; do
			# /proc/*/task/*/children needs CONFIG_PROC_CHILDREN; ps is portable.
			while read -r c; do
				[[ -n $c ]] && children+=("$c")
			done < <(ps -o pid= --ppid "$p" 2>/dev/null | tr -d ' ')
		done
		((${#children[@]} > 0)) && printf '%s\n' "${children[@]}"
		parents=("${children[@]}")
	done
	return 0
}

# dev_kubelet_pids: pids of kubelet processes running with the dev config.
dev_kubelet_pids() {
	local d pid
	for d in /proc/[0-9]*; do
		pid=${d#/proc/}
		[[ "$(exe_of "$pid")" == "$TOOLS_DIR/bin/kubelet" ]] || continue
		cmdline_of "$pid" | grep -qxF -- "$DEV_KUBELET_CONFIG" && echo "$pid"
	done
	return 0
}

# cgroup_hierarchies: the mount points of the host's cgroup file systems (each v1
# hierarchy and the v2 one), one a line.
cgroup_hierarchies() {
	awk '{ split($0, a, " - "); split(a[2], b, " ") }
		(b[1] == "cgroup" || b[1] == "cgroup2") && index($5, "/sys/fs/cgroup") == 1 { print $5 }' /proc/self/mountinfo
}

# dev_lock: serialise dev-up and dev-down. The lock file is .cache/dev.lock (beside
# DEV_CACHE_DIR): outside the directories dev-down removes, and not in /run, which
# dev-down leaves clean.
dev_lock() {
	mkdir -p "$(dirname "$DEV_CACHE_DIR")"
	exec 9>"$DEV_CACHE_DIR.lock"
	flock -w 300 9 || die "another dev-up/dev-down holds $DEV_CACHE_DIR.lock for 5 minutes; giving up"
}

# ctr_dev ARGS...: ctr against the private containerd, bounded in time.
# This host has cgroup v1: without the variable, every ctr call warns about it.
ctr_dev() {
	CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1 timeout "${CTR_TIMEOUT:-30}" "$TOOLS_DIR/bin/ctr" --address "$DEV_SOCKET" "$@"
}

# docker_dev ARGS...: the docker CLI against the private dockerd, bounded in time.
docker_dev() {
	DOCKER_HOST="$DEV_DOCKER_HOST" DOCKER_CONFIG="$DEV_DOCKER_CLI_CONFIG" \
		timeout "${DOCKER_TIMEOUT:-30}" "$TOOLS_DIR/bin/docker" "$@"
}

# wait_gone SECONDS PID...: true when all PIDs have exited in time.
wait_gone() {
	local secs=$1 p alive i
	shift
	for ((i = 0; i < secs * 10; i++)); do
		alive=false
		for p in "$@"; do
			pid_alive "$p" && alive=true
		done
		$alive || return 0
		sleep 0.1
	done
	return 1
}

# stop_vm_pools TIMEOUT SHIM...: stop the VM pools (`SHIM vm-pool`, runtime/vmpool.go)
# those shim binaries started: SIGTERM stops their idle VMs and removes their
# directories. One that does not exit within TIMEOUT seconds is killed with its children
# (its idle VMs; the VMs it handed to containers are gone with them by then), and what
# its VMs had mounted in its directory is detached. A pool of a binary replaced since
# (its /proc/PID/exe ends in " (deleted)") counts as that binary's.
stop_vm_pools() {
	local timeout=$1 d p sock dir m pools=() dirs=() kids=()
	shift
	for d in /proc/[0-9]*; do
		p=${d#/proc/}
		[[ "$(cmdline_of "$p" | sed -n 2p)" == vm-pool ]] || continue
		printf '%s\n' "$@" | grep -qxF -- "$(exe_of "$p")" || continue
		pools+=("$p")
		sock="$(cmdline_of "$p" | awk 'prev == "--socket" {print; exit} {prev = $0}')"
		[[ -n $sock ]] && dirs+=("${sock%.sock}")
	done
	((${#pools[@]} > 0)) || return 0
	log "stopping VM pools (pid ${pools[*]})"
	mapfile -t kids < <(descendants_of "${pools[@]}")
	kill -TERM "${pools[@]}" 2>/dev/null || true
	if ! wait_gone "$timeout" "${pools[@]}"; then
		log "VM pools still running after ${timeout}s: SIGKILL (with ${#kids[@]} child process(es))"
		kill -KILL "${pools[@]}" "${kids[@]}" 2>/dev/null || true
		wait_gone 5 "${pools[@]}" "${kids[@]}" || log "warning: some VM pool processes did not exit"
	fi
	for dir in "${dirs[@]}"; do
		[[ -d $dir ]] || continue
		awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
			umount -l "$m" 2>/dev/null || log "warning: could not unmount $m"
		done
		rm -rf --one-file-system "$dir" || log "warning: could not remove $dir"
	done
}
