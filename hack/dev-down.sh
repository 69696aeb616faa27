#!/usr/bin/env bash
# Tear the private developer containerd down (make dev-down): kill and delete every
# task and container in it (all namespaces), stop containerd (SIGTERM, then SIGKILL),
# kill leftover containerd-shim-gondolin-v1 processes of this tree that belonged to it
# (and their children: qemu, virtiofsd), unmount whatever is left under .cache/dev and
# /run/gondolin-dev, and remove both. Idempotent: succeeds when nothing is up.
# A system containerd, and shims of other containerds, are left alone.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STOP_TIMEOUT=${GONDOLIN_DEV_STOP_TIMEOUT:-15} # seconds between SIGTERM and SIGKILL

require_root
CONTAINERD="$TOOLS_DIR/bin/containerd"
SHIM="$OUT_BIN/$SHIM_NAME"
dev_lock

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

# --- containerd pids ---------------------------------------------------------------------
pids=()
if [[ -f $DEV_PIDFILE ]]; then
	p="$(cat "$DEV_PIDFILE")"
	if pid_alive "$p" && [[ "$(exe_of "$p")" == "$CONTAINERD" ]]; then
		pids+=("$p")
	fi
fi
while read -r p; do
	[[ -n $p && " ${pids[*]} " != *" $p "* ]] && pids+=("$p")
done < <(dev_containerd_pids)

# --- tasks and containers ---------------------------------------------------------------
if ((${#pids[@]} > 0)) && [[ -S $DEV_SOCKET ]] && CTR_TIMEOUT=5 ctr_dev version >/dev/null 2>&1; then
	for ns in $(ctr_dev namespaces ls -q 2>/dev/null || true); do
		tasks="$(ctr_dev -n "$ns" tasks ls -q 2>/dev/null || true)"
		for t in $tasks; do
			log "killing task $ns/$t"
			CTR_TIMEOUT=10 ctr_dev -n "$ns" tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1 || true
		done
		for t in $tasks; do
			CTR_TIMEOUT=20 ctr_dev -n "$ns" tasks delete -f "$t" >/dev/null 2>&1 ||
				log "warning: could not delete task $ns/$t (its shim is killed below)"
		done
		for c in $(ctr_dev -n "$ns" containers ls -q 2>/dev/null || true); do
			log "deleting container $ns/$c"
			CTR_TIMEOUT=20 ctr_dev -n "$ns" containers delete "$c" >/dev/null 2>&1 ||
				log "warning: could not delete container $ns/$c"
		done
	done
elif ((${#pids[@]} > 0)); then
	log "warning: containerd (pid ${pids[*]}) does not answer; skipping task/container cleanup"
fi

# --- containerd --------------------------------------------------------------------------
if ((${#pids[@]} > 0)); then
	log "stopping containerd (pid ${pids[*]})"
	kill -TERM "${pids[@]}" 2>/dev/null || true
	if ! wait_gone "$STOP_TIMEOUT" "${pids[@]}"; then
		log "containerd still running after ${STOP_TIMEOUT}s: SIGKILL"
		kill -KILL "${pids[@]}" 2>/dev/null || true
		wait_gone 5 "${pids[@]}" || die "containerd (pid ${pids[*]}) survived SIGKILL"
	fi
fi
rm -f "$DEV_PIDFILE"

# --- leftover shims ------------------------------------------------------------------------
# Shims of this tree that served the private containerd (-address is our socket), or
# whose containerd socket is gone: orphans. Shims of another live containerd (an
# integration run, a system containerd) are not ours to kill.
shims=()
for d in /proc/[0-9]*; do
	p=${d#/proc/}
	[[ "$(exe_of "$p")" == "$SHIM" ]] || continue
	addr="$(cmdline_of "$p" | awk 'prev == "-address" {print; exit} {prev = $0}')"
	if [[ $addr == "$DEV_SOCKET" || -z $addr || ! -S $addr ]]; then
		shims+=("$p")
	fi
done
if ((${#shims[@]} > 0)); then
	mapfile -t kids < <(descendants_of "${shims[@]}")
	log "killing leftover $SHIM_NAME (pid ${shims[*]}) and ${#kids[@]} child process(es)"
	kill -KILL "${shims[@]}" "${kids[@]}" 2>/dev/null || true
	wait_gone 5 "${shims[@]}" "${kids[@]}" || log "warning: some shim processes did not exit: ${shims[*]} ${kids[*]}"
fi

# --- mounts --------------------------------------------------------------------------------
# Mount points under our directories, deepest first (mountinfo field 5, octal-escaped).
our_mounts() {
	awk -v a="$DEV_CACHE_DIR" -v b="$DEV_RUN_DIR" '
		function unescape(s,   out, i, c) {
			out = ""
			for (i = 1; i <= length(s); i++) {
				c = substr(s, i, 1)
				if (c == "\\" && substr(s, i + 1, 3) ~ /^[0-7][0-7][0-7]$/) {
					out = out sprintf("%c", (substr(s, i + 1, 1) * 64) + (substr(s, i + 2, 1) * 8) + substr(s, i + 3, 1))
					i += 3
				} else {
					out = out c
				}
			}
			return out
		}
		{
			m = unescape($5)
			if (m == a || index(m, a "/") == 1 || m == b || index(m, b "/") == 1) print length(m) "\t" m
		}' /proc/self/mountinfo | sort -rn | cut -f2-
}
for attempt in 1 2 3; do
	mapfile -t mounts < <(our_mounts)
	((${#mounts[@]} > 0)) || break
	for m in "${mounts[@]}"; do
		log "unmounting $m"
		if ((attempt < 3)); then
			umount "$m" 2>/dev/null || true
		else
			umount -l "$m" 2>/dev/null || true
		fi
	done
done
mapfile -t mounts < <(our_mounts)
((${#mounts[@]} == 0)) || die "still mounted, not removing anything: ${mounts[*]}"

# --- directories ----------------------------------------------------------------------------
# --one-file-system: never walk into a mount we failed to see.
rm -rf --one-file-system "$DEV_RUN_DIR" "$DEV_CACHE_DIR"
[[ ! -e $DEV_RUN_DIR && ! -e $DEV_CACHE_DIR ]] || die "could not remove $DEV_RUN_DIR or $DEV_CACHE_DIR"
log "private containerd is down; removed $DEV_RUN_DIR and $DEV_CACHE_DIR"
