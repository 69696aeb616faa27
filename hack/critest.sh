#!/usr/bin/env bash
# CRI conformance (make critest): cri-tools' critest (v1.37.0, `make tools`) against
# the private developer containerd (make dev-up), once with the runtime handler runc
# and once with gondolin, the same selection, one spec at a time. Images come from a
# local registry this script starts and fills with stand-ins built here
# (integration/testimage: testimage.CRIImages, pushed by mkcriimages); containerd
# reaches it through hosts.toml files naming it as the server of registry.k8s.io,
# gcr.io and k8s.gcr.io, so the specs pull the names they expect and nothing leaves
# this machine.
#
#   selection      every spec but those matching a line of hack/critest-skip.txt
#                  (what neither runtime can do on this host, each with its reason)
#   known failures hack/critest-known-failures.txt: the gondolin specs expected to
#                  fail, each with its reason (docs/limits.md, "CRI conformance")
#   results        $GONDOLIN_CRITEST_RESULTS (default .cache/critest/<UTC time>/):
#                  critest-<handler>.log, junit-<handler>.xml, images.txt, registry.log
#
# Exits non-zero when gondolin fails a spec that is not a known failure, or runc
# fails any spec (the selection assumes what this host gives runc). A known
# failure that passes is reported, to be dropped from the list.
#
# Environment:
#   GONDOLIN_CRITEST_RUNTIMES  handlers to run, in order (default "runc gondolin")
#   GONDOLIN_CRITEST_FOCUS     a ginkgo focus regexp narrowing the selection
#   GONDOLIN_CRITEST_HOSTS_DIR the directory of registry hosts files the containerd
#                              reads (its CRI registry config_path); default
#                              GONDOLIN_REGISTRY_HOSTS_DIR from the dev env file
#   GONDOLIN_CRITEST_RESULTS   where the reports go
#   GONDOLIN_CRITEST_TIMEOUT   ginkgo's timeout for one runtime's run (default 90m)
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
read -ra runtimes <<<"${GONDOLIN_CRITEST_RUNTIMES:-runc gondolin}"
focus=${GONDOLIN_CRITEST_FOCUS:-}
hosts_dir=${GONDOLIN_CRITEST_HOSTS_DIR:-}
results=${GONDOLIN_CRITEST_RESULTS:-$REPO_ROOT/.cache/critest/$(date -u +%Y%m%dT%H%M%SZ)}
suite_timeout=${GONDOLIN_CRITEST_TIMEOUT:-90m}
skip_file="$REPO_ROOT/hack/critest-skip.txt"
known_file="$REPO_ROOT/hack/critest-known-failures.txt"
# The host ports the specs bind (cri-tools pkg/validate consts.go, consts_linux.go).
spec_ports=(12000 12001 12002 12003)

((${#runtimes[@]} > 0)) || die "GONDOLIN_CRITEST_RUNTIMES is empty"
[[ -f $DEV_ENV_FILE ]] || die "$DEV_ENV_FILE not found: start the dev environment first (make dev-up)"
# shellcheck source=/dev/null
source "$DEV_ENV_FILE"
hosts_dir=${hosts_dir:-${GONDOLIN_REGISTRY_HOSTS_DIR:-}}
[[ -n $hosts_dir ]] || die "the dev env names no registry hosts directory (GONDOLIN_REGISTRY_HOSTS_DIR): it predates hack/dev-up.sh giving containerd's CRI a registry config_path; restart it with make dev-up"
for cmd in critest crictl registry curl ipcmk ipcrm ss; do
	command -v "$cmd" >/dev/null || die "'$cmd' not found on PATH (critest, crictl and registry: make tools; curl, ipcmk, ipcrm, ss: make deps)"
done
endpoint=${CONTAINER_RUNTIME_ENDPOINT:?the dev env file sets no CONTAINER_RUNTIME_ENDPOINT}
crictl_() { timeout 120 crictl --config "$tmp/crictl.yaml" "$@"; }
for p in "${spec_ports[@]}"; do
	if [[ -n "$(ss -Hltn "sport = :$p")" ]]; then
		die "port $p is in use; the port mapping and port-forward specs bind it on the host"
	fi
done

# read_list FILE: the list's lines (REGEXP-or-NAME :: REASON) without comments,
# each checked to have a reason; prints the first fields.
read_list() {
	local file=$1 line n=0 name reason
	[[ -f $file ]] || die "$file not found"
	while IFS= read -r line || [[ -n $line ]]; do
		n=$((n + 1))
		[[ -z ${line//[[:space:]]/} || $line == \#* ]] && continue
		[[ $line == *' :: '* ]] || die "$file:$n: want 'SPEC :: REASON', got: $line"
		name=${line%% :: *}
		reason=${line#* :: }
		[[ -n ${name// /} && -n ${reason// /} ]] || die "$file:$n: empty spec or reason: $line"
		printf '%s\n' "$name"
	done <"$file"
}
skip_re="$(read_list "$skip_file" | paste -sd '|')"
known="$(read_list "$known_file")"

mkdir -p "$results"
tmp="$(mktemp -d /tmp/gondolin-critest.XXXXXX)"
printf 'runtime-endpoint: %s\nimage-endpoint: %s\n' "$endpoint" "$endpoint" >"$tmp/crictl.yaml"
registry_pid=""
hosts_written=()
cleanup() {
	local f
	if [[ -n $registry_pid ]]; then
		kill "$registry_pid" 2>/dev/null || true
		wait "$registry_pid" 2>/dev/null || true
	fi
	for f in "${hosts_written[@]}"; do
		rm -f "$f"
		rmdir "$(dirname "$f")" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
crictl_ version >/dev/null || die "containerd's CRI does not answer on $endpoint (make dev-up)"

# --- the registry ---------------------------------------------------------------------
# A free port: ss says none listens there, and the registry proved it by answering
# (it exits when the port is taken meanwhile; then another is tried).
start_registry() {
	local port try i
	for ((try = 0; try < 20; try++)); do
		port=$((20000 + RANDOM % 30000))
		[[ -z "$(ss -Hltn "sport = :$port")" ]] || continue
		cat >"$tmp/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $tmp/registry
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
EOF
		registry serve "$tmp/registry.yml" >>"$results/registry.log" 2>&1 &
		registry_pid=$!
		for ((i = 0; i < 100; i++)); do
			if curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null && pid_alive "$registry_pid"; then
				registry_addr="127.0.0.1:$port"
				return 0
			fi
			pid_alive "$registry_pid" || break
			sleep 0.1
		done
		kill "$registry_pid" 2>/dev/null || true
		wait "$registry_pid" 2>/dev/null || true
		registry_pid=""
	done
	die "the registry did not start on a free port in 20 tries (see $results/registry.log)"
}
start_registry
log "registry $(registry --version | awk '{print $3}') on $registry_addr (storage $tmp/registry)"

# --- the images -----------------------------------------------------------------------
go="$(find_go)"
log "building the stand-in images and pushing them to $registry_addr"
(
	cd "$REPO_ROOT"
	CGO_ENABLED=0 "$go" build -trimpath -ldflags '-s -w' -o "$tmp/critest-helper" ./integration/testimage/cmd/critest-helper
	"$go" build -o "$tmp/mkcriimages" ./integration/testimage/cmd/mkcriimages
) || die "building critest-helper or mkcriimages failed"
"$tmp/mkcriimages" -helper "$tmp/critest-helper" -registry "$registry_addr" >"$results/images.txt" ||
	die "mkcriimages failed"
# images.txt: NAME MANIFEST-DIGEST IMAGE-ID, one line per name.
mapfile -t image_names < <(awk '{print $1}' "$results/images.txt")
mapfile -t image_hosts < <(awk '{split($1, a, "/"); print a[1]}' "$results/images.txt" | sort -u)
log "pushed ${#image_names[@]} names (hosts: ${image_hosts[*]})"

# hosts.toml: our registry is each host's server, so that nothing is asked of the
# real one. A file not written by this script is left alone, and the run refused.
marker="# Written by hack/critest.sh for this run; removed when it ends."
for h in "${image_hosts[@]}"; do
	f="$hosts_dir/$h/hosts.toml"
	if [[ -e $f ]] && ! grep -qxF "$marker" "$f"; then
		die "$f exists and was not written by this script: move it away or set GONDOLIN_CRITEST_HOSTS_DIR"
	fi
	mkdir -p "$hosts_dir/$h"
	hosts_written+=("$f")
	printf '%s\nserver = "http://%s"\n' "$marker" "$registry_addr" >"$f"
done

# Pull every stand-in afresh (an image of an earlier run under the same name would
# otherwise be used as it is), and check containerd got what was pushed: the first
# pull also proves containerd reads $hosts_dir.
first=true
while read -r name _ id; do
	if have="$(crictl_ inspecti -o go-template --template '{{.status.id}}' "$name" 2>/dev/null)" && [[ -n $have ]]; then
		# Quiet: crictl warns about every image with more than one tag.
		if ! crictl_ rmi "$name" >/dev/null 2>"$tmp/rmi.err"; then
			cat "$tmp/rmi.err" >&2
			die "crictl rmi $name failed (above)"
		fi
	fi
	if ! crictl_ pull "$name" >/dev/null 2>"$tmp/pull.err"; then
		cat "$tmp/pull.err" >&2
		$first && die "containerd could not pull $name from $registry_addr: does it read $hosts_dir? Its CRI registry config_path must name that directory (hack/dev-up.sh sets it; a containerd started before that needs a restart: make dev-up)"
		die "crictl pull $name failed (above)"
	fi
	first=false
	have="$(crictl_ inspecti -o go-template --template '{{.status.id}}' "$name")"
	[[ $have == "$id" ]] || die "containerd has $name as image $have, pushed $id"
done <"$results/images.txt"
log "containerd pulled every stand-in through $hosts_dir"

# --- critest ----------------------------------------------------------------------------
# unescape_xml: what encoding/xml escapes in attribute values, back.
unescape_xml() {
	sed -e 's/&#34;/"/g; s/&quot;/"/g; s/&#39;/'"'"'/g; s/&apos;/'"'"'/g; s/&lt;/</g; s/&gt;/>/g; s/&#x9;/\t/g; s/&#xA;/ /g; s/&amp;/\&/g'
}
# specs JUNIT STATUS: the names of the specs with that status. "skipped": skipped
# by the spec itself, not left out by the selection; "failed": every way of not
# passing (failed, panicked, timedout, interrupted, aborted).
specs() {
	local junit=$1 status=$2 tail=''
	[[ $status == failed ]] && status='(failed|panicked|timedout|interrupted|aborted)'
	# A spec that skipped itself says why; one the selection left out does not.
	[[ $status == skipped ]] && tail='>[[:space:]]*<skipped message="skipped - '
	# The report on one line: a testcase's <skipped> is on the line after it.
	tr '\n' ' ' <"$junit" | grep -oE '<testcase name="\[It\] [^"]*"[^>]*status="'"$status"'"[^>]*'"$tail" |
		sed -E 's/^<testcase name="\[It\] ([^"]*)".*/\1/' | unescape_xml || true
}
count() { if [[ -z $1 ]]; then echo 0; else printf '%s\n' "$1" | wc -l; fi; }
# The HostIpc specs make a 1 MiB System V shared memory segment on the host
# (ipcmk -M 1048576) and leave it: remove the ones that appeared during a run,
# unattached and of that size.
shm_ids() { awk 'NR > 1 {print $2}' /proc/sysvipc/shm | sort; }
remove_spec_shm() {
	local before=$1 id
	while read -r id; do
		[[ -n $id ]] || continue
		if awk -v id="$id" 'NR > 1 && $2 == id && $4 == 1048576 && $7 == 0 {f = 1} END {exit !f}' /proc/sysvipc/shm; then
			ipcrm -m "$id" || log "warning: ipcrm -m $id failed"
		fi
	done < <(comm -13 <(printf '%s\n' "$before") <(shm_ids))
}

declare -A n_passed n_failed n_skipped n_left wall failed_of
for rt in "${runtimes[@]}"; do
	junit="$results/junit-$rt.xml"
	args=(
		--runtime-endpoint="$endpoint" --image-endpoint="$endpoint" --runtime-handler="$rt"
		--ginkgo.skip="$skip_re" --ginkgo.junit-report="$junit" --ginkgo.no-color
		--ginkgo.timeout="$suite_timeout"
	)
	[[ -z $focus ]] || args+=(--ginkgo.focus="$focus")
	# No --parallel: its default (1) runs the specs one at a time, and naming the
	# flag at all makes ginkgo v2.32 refuse to start ("Use of go test -parallel").
	log "critest --runtime-handler=$rt (log: $results/critest-$rt.log)"
	start=$SECONDS
	rc=0
	shm_before="$(shm_ids)"
	(cd "$tmp" && critest "${args[@]}") >"$results/critest-$rt.log" 2>&1 || rc=$?
	wall[$rt]=$((SECONDS - start))
	remove_spec_shm "$shm_before"
	[[ -s $junit ]] || die "critest ($rt) exited $rc and wrote no JUnit report; see $results/critest-$rt.log"
	passed="$(specs "$junit" passed)"
	failed="$(specs "$junit" failed)"
	skipped="$(specs "$junit" skipped)"
	n_passed[$rt]=$(count "$passed")
	n_failed[$rt]=$(count "$failed")
	n_skipped[$rt]=$(count "$skipped")
	n_left[$rt]=$(($(grep -c '<testcase name="\[It\] ' "$junit") - n_passed[$rt] - n_failed[$rt] - n_skipped[$rt]))
	failed_of[$rt]=$failed
	if ((rc != 0 && n_failed[$rt] == 0)); then
		die "critest ($rt) exited $rc with no failed spec in its report; see $results/critest-$rt.log"
	fi
	log "$rt: ${n_passed[$rt]} passed, ${n_failed[$rt]} failed, ${n_skipped[$rt]} skipped in $((wall[$rt] / 60))m$((wall[$rt] % 60))s"
done

# --- summary ------------------------------------------------------------------------------
echo
printf '%-10s %7s %7s %8s %13s %9s\n' runtime passed failed skipped "not selected" wall
for rt in "${runtimes[@]}"; do
	printf '%-10s %7d %7d %8d %13d %6dm%02ds\n' "$rt" "${n_passed[$rt]}" "${n_failed[$rt]}" "${n_skipped[$rt]}" \
		"${n_left[$rt]}" $((wall[$rt] / 60)) $((wall[$rt] % 60))
done
echo "(skipped: by the spec itself, e.g. a feature the runtime does not announce; not selected: hack/critest-skip.txt or GONDOLIN_CRITEST_FOCUS)"

status=0
for rt in "${runtimes[@]}"; do
	[[ -n ${failed_of[$rt]} ]] || continue
	echo
	if [[ $rt == gondolin ]]; then
		unexpected="$(grep -vxF -f <(printf '%s\n' "$known") <<<"${failed_of[$rt]}" || true)"
		expected="$(grep -xF -f <(printf '%s\n' "$known") <<<"${failed_of[$rt]}" || true)"
		if [[ -n $expected ]]; then
			echo "gondolin: $(count "$expected") known failures (hack/critest-known-failures.txt):"
			sed 's/^/  /' <<<"$expected"
		fi
		if [[ -n $unexpected ]]; then
			echo "gondolin: $(count "$unexpected") UNEXPECTED failures (see $results/critest-gondolin.log):"
			sed 's/^/  /' <<<"$unexpected"
			status=1
		fi
	else
		echo "$rt: $(count "${failed_of[$rt]}") FAILED (the selection assumes this host gives $rt what every selected spec needs: a host limitation goes into hack/critest-skip.txt with its reason):"
		sed 's/^/  /' <<<"${failed_of[$rt]}"
		status=1
	fi
done
for rt in "${runtimes[@]}"; do
	[[ $rt == gondolin ]] || continue
	passing="$(grep -xF -f <(specs "$results/junit-$rt.xml" passed) <<<"$known" || true)"
	if [[ -n $passing ]]; then
		echo
		echo "gondolin: known failures that passed (drop them from hack/critest-known-failures.txt and docs/limits.md):"
		sed 's/^/  /' <<<"$passing"
	fi
done
echo
echo "reports: $results"
exit "$status"
