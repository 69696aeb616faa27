#!/usr/bin/env bash
# Tear the private developer containerd and dockerd down (make dev-down): stop the dev
# kubelet (GONDOLIN_DEV_KUBELET=1 hack/dev-up.sh) and remove its pods, stop the
# private dockerd (SIGTERM: it stops its containers; then SIGKILL) and its leftover
# docker-proxy processes, kill and delete every task and container in containerd (all
# namespaces), stop containerd (SIGTERM, then SIGKILL), kill leftover
# containerd-shim-gondolin-v1 processes of this tree that belonged to it (and their
# children: qemu, virtiofsd) and the VM pools they started, unmount whatever is left under .cache/dev and
# /run/gondolin-dev (container network namespaces included), undo what dockerd did to
# the host (its bridges, its iptables rules and chains, IP forwarding and the FORWARD
# policy, its cgroups) and what the kubelet did (its cgroups, the kernel tunables it
# set), and remove both directories. Idempotent: succeeds when nothing
# is up. A system containerd or dockerd, and shims of other containerds, are left alone.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STOP_TIMEOUT=${GONDOLIN_DEV_STOP_TIMEOUT:-15} # seconds between SIGTERM and SIGKILL

require_root
CONTAINERD="$TOOLS_DIR/bin/containerd"
SHIM="$OUT_BIN/$SHIM_NAME"
dev_lock

# --- kubelet ---------------------------------------------------------------------------------
# First of all: it would restart the static pods that the steps below stop.
kpids=()
if [[ -f $DEV_KUBELET_PIDFILE ]]; then
	p="$(cat "$DEV_KUBELET_PIDFILE")"
	if pid_alive "$p" && [[ "$(exe_of "$p")" == "$TOOLS_DIR/bin/kubelet" ]]; then
		kpids+=("$p")
	fi
fi
while read -r p; do
	[[ -n $p && " ${kpids[*]} " != *" $p "* ]] && kpids+=("$p")
done < <(dev_kubelet_pids)
if ((${#kpids[@]} > 0)); then
	log "stopping the kubelet (pid ${kpids[*]})"
	kill -TERM "${kpids[@]}" 2>/dev/null || true
	if ! wait_gone 30 "${kpids[@]}"; then
		log "the kubelet still running after 30s: SIGKILL"
		kill -KILL "${kpids[@]}" 2>/dev/null || true
		wait_gone 5 "${kpids[@]}" || die "the kubelet (pid ${kpids[*]}) survived SIGKILL"
	fi
fi
rm -f "$DEV_KUBELET_PIDFILE"
# Its pods go through CRI, so that their network namespaces (in /run/netns) go with
# them: the tasks killed through ctr below would leave those.
if [[ -d $DEV_KUBELET_DIR && -x $TOOLS_DIR/bin/crictl && -S $DEV_SOCKET ]]; then
	log "removing the CRI pods"
	timeout 180 "$TOOLS_DIR/bin/crictl" --runtime-endpoint "unix://$DEV_SOCKET" --timeout 2m rmp -a -f >/dev/null 2>&1 ||
		log "warning: crictl rmp -a -f failed; the pods' tasks are killed below"
fi

# --- dockerd ---------------------------------------------------------------------------------
# First: it stops its containers (tasks in containerd namespace moby) itself, and would
# restart them if containerd went first.
dpids=()
if [[ -f $DEV_DOCKER_PIDFILE ]]; then
	p="$(cat "$DEV_DOCKER_PIDFILE")"
	if pid_alive "$p" && [[ "$(exe_of "$p")" == "$TOOLS_DIR/bin/dockerd" ]]; then
		dpids+=("$p")
	fi
fi
while read -r p; do
	[[ -n $p && " ${dpids[*]} " != *" $p "* ]] && dpids+=("$p")
done < <(dev_dockerd_pids)
if ((${#dpids[@]} > 0)); then
	log "stopping dockerd (pid ${dpids[*]})"
	kill -TERM "${dpids[@]}" 2>/dev/null || true
	# Its shutdown-timeout is 10 s per container (in parallel), then its own cleanup.
	if ! wait_gone 30 "${dpids[@]}"; then
		log "dockerd still running after 30s: SIGKILL"
		kill -KILL "${dpids[@]}" 2>/dev/null || true
		wait_gone 5 "${dpids[@]}" || die "dockerd (pid ${dpids[*]}) survived SIGKILL"
	fi
fi
rm -f "$DEV_DOCKER_PIDFILE"
# docker-proxy processes of our tools whose dockerd is gone (those of another live
# dockerd are its own).
proxies=()
for d in /proc/[0-9]*; do
	p=${d#/proc/}
	[[ "$(exe_of "$p")" == "$TOOLS_DIR/bin/docker-proxy" ]] || continue
	pp="$(awk '/^PPid:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)"
	[[ -n $pp && "$(exe_of "$pp")" == */dockerd ]] && continue
	proxies+=("$p")
done
if ((${#proxies[@]} > 0)); then
	log "killing leftover docker-proxy (pid ${proxies[*]})"
	kill -KILL "${proxies[@]}" 2>/dev/null || true
	wait_gone 5 "${proxies[@]}" || log "warning: some docker-proxy processes did not exit: ${proxies[*]}"
fi

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

# --- VM pools ------------------------------------------------------------------------------
stop_vm_pools "$STOP_TIMEOUT" "$SHIM"

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

# --- what dockerd did to the host -------------------------------------------------------------
# Its containers' cgroups are gone with them; their parent is the dev dockerd's own.
while read -r cg; do
	[[ -n $cg ]] || continue
	find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	[[ -d $cg ]] && log "warning: could not remove cgroup $cg (processes left in it?)"
done < <(find /sys/fs/cgroup -maxdepth 2 -type d -name "$DEV_DOCKER_CGROUP_PARENT" 2>/dev/null)

# state_field KIND [KEY]: the values recorded by dev-up for KIND (and KEY).
state_field() {
	awk -v k="$1" -v key="${2:-}" '$1 == k && (key == "" || $2 == key) {
		$1 = ""; if (key != "") $2 = ""; sub(/^ +/, ""); print }' "$DEV_DOCKER_HOST_STATE"
}

# remove_docker_rules CMD: delete Docker's chains, and the rules of the built-in chains
# that jump to them or match its bridges, from every table (one iptables-restore per
# table, --noflush: nothing else is touched).
remove_docker_rules() {
	local cmd=$1 table save chains rules c
	for table in raw mangle nat filter; do
		save="$("$cmd-save" -t "$table" 2>/dev/null)" || continue
		chains="$(awk '/^:DOCKER/ {print substr($1, 2)}' <<<"$save")"
		rules="$(awk '/^-A / && $2 !~ /^DOCKER/ && ($0 ~ / -[jg] DOCKER/ || $0 ~ / -[io] (docker0|br-[0-9a-f]+)( |$)/) {
			sub(/^-A /, "-D "); print }' <<<"$save")"
		[[ -n $chains || -n $rules ]] || continue
		log "removing Docker's $cmd rules and chains from table $table"
		{
			echo "*$table"
			[[ -z $rules ]] || echo "$rules"
			for c in $chains; do echo "-F $c"; done
			for c in $chains; do echo "-X $c"; done
			echo "COMMIT"
		} | "$cmd-restore" -w --noflush || log "warning: $cmd-restore could not remove Docker's rules from table $table"
	done
}

# remove_new_empty_nft_tables: iptables-nft created the nf_tables tables Docker's rules
# went into; delete those that were not there before and are empty again (built-in
# chains with policy ACCEPT and no rules), as if they had never been created.
remove_new_empty_nft_tables() {
	local before family name cmd
	before="$(state_field nft_tables)"
	[[ -n $before ]] && command -v nft >/dev/null || return 0
	[[ "$(iptables --version 2>/dev/null)" == *nf_tables* ]] || return 0
	while read -r family name; do
		[[ " $before " == *" $family:$name "* ]] && continue
		case $family in
		ip) cmd=iptables ;;
		ip6) cmd=ip6tables ;;
		*) continue ;;
		esac
		# Anything but ":BUILTIN ACCEPT" chain lines and the framing is content.
		# Read whole: with pipefail, a `| grep -q` that exits first fails the writer.
		rules="$("$cmd-save" -t "$name" 2>/dev/null || true)"
		if [[ -n "$(grep -vE '^(#|\*|COMMIT$|:[A-Z]+ ACCEPT )' <<<"$rules" || true)" ]]; then
			continue
		fi
		log "deleting the empty nf_tables table $family $name"
		nft delete table "$family" "$name" || log "warning: could not delete nf_tables table $family $name"
	done < <(nft list tables 2>/dev/null | awk '$1 == "table" {print $2, $3}')
}

if [[ -f $DEV_DOCKER_HOST_STATE ]]; then
	foreign="$(foreign_dockerd_pids | tr '\n' ' ')"
	if [[ -n $foreign ]]; then
		log "warning: another dockerd runs (pid ${foreign% }): leaving docker0, Docker's iptables chains and IP forwarding as they are"
	else
		mapfile -t bridges_before < <(state_field bridge)
		while read -r b; do
			[[ $b == docker0 || $b =~ ^br-[0-9a-f]{12}$ ]] || continue
			[[ " ${bridges_before[*]} " == *" $b "* ]] && continue
			log "deleting bridge $b"
			ip link delete "$b" || log "warning: could not delete bridge $b"
		done < <(ip -o link show type bridge 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); print $2}')
		for cmd in iptables ip6tables; do
			command -v "$cmd" >/dev/null || continue
			chains_before="$(state_field chains "$cmd")"
			if [[ -n $chains_before && $chains_before != none ]]; then
				log "warning: $cmd had Docker chains before dev-up ($chains_before): leaving $cmd as it is"
				continue
			fi
			remove_docker_rules "$cmd"
			policy="$(state_field policy "$cmd")"
			if [[ -n $policy ]] && ! "$cmd" -w -S FORWARD 2>/dev/null | grep -qxF -- "-P FORWARD $policy"; then
				log "restoring the $cmd FORWARD policy to $policy"
				"$cmd" -w -P FORWARD "$policy" || log "warning: could not set the $cmd FORWARD policy to $policy"
			fi
		done
		while read -r f v; do
			[[ -n $f && -w $f ]] || continue
			if [[ "$(cat "$f")" != "$v" ]]; then
				log "restoring $f to $v"
				echo "$v" >"$f" || log "warning: could not write $v to $f"
			fi
		done < <(state_field sysctl)
		remove_new_empty_nft_tables
		# dockerd's plugin discovery directory is not under its exec root.
		if [[ -z "$(state_field run_docker)" ]]; then
			rmdir /run/docker/plugins /run/docker 2>/dev/null || true
		fi
	fi
fi

# --- what the kubelet did to the host ---------------------------------------------------------
# Its cgroups: each pod's went with the pod, its QoS parents stay until here.
while read -r h; do
	cg="$h$DEV_KUBELET_CGROUP_ROOT"
	[[ -d $cg ]] || continue
	find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	[[ -d $cg ]] && log "warning: could not remove cgroup $cg (processes left in it?)"
done < <(cgroup_hierarchies)
# The kernel tunables it set, back to what they were before it first started.
if [[ -f $DEV_KUBELET_HOST_STATE ]]; then
	while read -r kind f v; do
		[[ $kind == sysctl && -n $f && -w $f ]] || continue
		if [[ "$(cat "$f")" != "$v" ]]; then
			log "restoring $f to $v"
			echo "$v" >"$f" || log "warning: could not write $v to $f"
		fi
	done <"$DEV_KUBELET_HOST_STATE"
fi

# --- CRI network ------------------------------------------------------------------------------
# The CNI bridge the CRI plugin's pods were attached to (each pod's veth and address went
# with its pod; the bridge stays until here), and portmap's chains once no rule is left.
if ip link show "$DEV_CNI_BRIDGE" >/dev/null 2>&1; then
	log "deleting bridge $DEV_CNI_BRIDGE"
	ip link delete "$DEV_CNI_BRIDGE" || log "warning: could not delete bridge $DEV_CNI_BRIDGE"
fi

# --- directories ----------------------------------------------------------------------------
# --one-file-system: never walk into a mount we failed to see.
rm -rf --one-file-system "$DEV_RUN_DIR" "$DEV_CACHE_DIR"
[[ ! -e $DEV_RUN_DIR && ! -e $DEV_CACHE_DIR ]] || die "could not remove $DEV_RUN_DIR or $DEV_CACHE_DIR"
log "private containerd and dockerd are down; removed $DEV_RUN_DIR and $DEV_CACHE_DIR"
