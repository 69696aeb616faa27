#!/usr/bin/env bash
# Runs the end-to-end tests against a fresh private containerd (make dev-up)
# and tears it down afterwards, whatever the result. Two passes:
#
#  1. The whole suite on the default path, what `make install` gives a user:
#     the shim's built-in config takes the QEMU 10 and Rust virtiofsd that
#     `make build` places in _output/lib/gondolin, and resumes each VM from a
#     snapshot (snapshot_boot = "auto"). dockerd's containers too.
#  2. A smoke run of the booted path, what a host without those binaries
#     gets: the system's QEMU (Debian 12: 7.2) with QEMU's C virtiofsd, and
#     snapshot_boot = false. Every `ctr run` gets that runtime config
#     (GONDOLIN_TEST_RUNTIME_CONFIG; merged into the configs tests write
#     themselves), and `docker run --runtime gondolin` becomes the
#     "gondolin-test" runtime, whose config file (GONDOLIN_DEV_TEST_CONFIG)
#     holds it meanwhile (GONDOLIN_TEST_DOCKER_RUNTIME). The tests: both guest
#     kernels' boot with egress and exec, run, exec, the egress allow-list,
#     docker run, and the hostile chroot escape.
#
# Each pass's part of the shim log is checked: pass 1 resumed VMs and no
# snapshot failed to load; pass 2 resumed none.
#
# hack/integration.sh [GO TEST FLAGS...]: the flags go to both passes (a -run
# narrows pass 1; pass 2 keeps its own list).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

die() { echo "[integration.sh] $*" >&2; exit 1; }
say() { echo "[integration.sh] $*" >&2; }

# The booted path's tests (pass 2).
SMOKE='^(TestBootPaths|TestRunOutputAndExitCode|TestExec|TestEgressAllowlist|TestDockerRunLikeRunc|TestHostileChrootEscape|TestCRIPodLikeRunc)$'

bundled="$repo/_output/lib/gondolin"
[[ -x $bundled/qemu/bin/qemu-system-x86_64 && -x $bundled/virtiofsd ]] ||
	die "the default path needs $bundled/qemu/bin/qemu-system-x86_64 and $bundled/virtiofsd: run make build"
system_qemu="$(command -v qemu-system-x86_64)" ||
	die "the booted pass needs the system's QEMU (qemu-system-x86_64 on PATH): run make deps"
c_virtiofsd=/usr/lib/qemu/virtiofsd
[[ -x $c_virtiofsd ]] || die "the booted pass needs QEMU's C virtiofsd $c_virtiofsd: run make deps"

tmp="$(mktemp -d /tmp/gondolin-integration.XXXXXX)"
hack/dev-down.sh >/dev/null 2>&1 || true
hack/dev-up.sh
trap 'hack/dev-down.sh; rm -rf "$tmp"' EXIT
# shellcheck source=/dev/null
source .cache/dev/env

log="$GONDOLIN_DEV_CONTAINERD_LOG"
lines() { wc -l <"$log"; }
# count_boots LINE FILE: the shim log after the containerd log's first LINE
# lines, into FILE; prints how many VMs resumed, how many booted and how many
# came from the VM pool (which resumed or booted them; its log is its own).
count_boots() {
	tail -n "+$(($1 + 1))" "$log" >"$2"
	echo "$(grep -a 'msg="guest agent ready"' "$2" | grep -c 'boot=snapshot')" \
		"$(grep -a 'msg="guest agent ready"' "$2" | grep -c 'boot=cold')" \
		"$(grep -a 'msg="guest agent ready"' "$2" | grep -c 'boot=pool')"
}
# pool_log MARK FILE: what the VM pools (runtime/vmpool.go) logged since mark_pool_logs
# MARK, into FILE (their logs are appended to across runs; a pool started since has a
# log of its own, read whole).
pool_log_dir=/run/gondolin/vm-pool
mark_pool_logs() {
	local f
	for f in "$pool_log_dir"/*.log; do
		if [[ -f $f ]]; then echo "hack/integration.sh mark $1" >>"$f"; fi
	done
	return 0
}
pool_log() {
	local f
	: >"$2"
	for f in "$pool_log_dir"/*.log; do
		[[ -f $f ]] || continue
		if grep -q "hack/integration.sh mark $1" "$f"; then
			sed -n "/hack\/integration.sh mark $1/,\$p" "$f" >>"$2"
		else
			cat "$f" >>"$2"
		fi
	done
}

# --- pass 1: the default path ------------------------------------------------------
start=$(lines)
mark_pool_logs pass1
go test -tags integration -count=1 -v -timeout 60m ./integration/... "$@"
read -r resumed booted pooled < <(count_boots "$start" "$tmp/default.log")
pool_log pass1 "$tmp/pool.log"
say "default path: $pooled VMs from the VM pool ($(grep -ac 'boot=snapshot' "$tmp/pool.log") resumed and warmed up by it), $resumed resumed from a snapshot, $booted booted (tests that name another QEMU or virtiofsd, or give a guest that cannot boot)"
if grep -a 'level=warning\|level=error' "$tmp/pool.log" >&2; then
	say "the VM pools warned (above; $pool_log_dir/*.log)"
fi
((pooled > 0)) || die "no container of the default path got a VM from the VM pool (see $log and $pool_log_dir/*.log)"
# A snapshot that could not be made is reported, not fatal: some tests give a
# kernel that cannot boot. One that was made but did not load is a bug.
made="$(grep -a 'snapshot_boot: no VM snapshot to resume' "$tmp/default.log" | sed -n 's/.*error="\([^"]*\)".*/\1/p' | cut -c1-300 | sort | uniq -c || true)"
if [[ -n $made ]]; then
	say "VMs that booted because no snapshot could be made for their shape (count, why):"
	echo "$made" >&2
fi
((resumed + pooled > 0)) || die "the default path resumed no VM: the shim did not find or could not use $bundled (see $log)"
if grep -a 'resuming the VM snapshot failed' "$tmp/default.log" "$tmp/pool.log" >&2; then
	die "a VM snapshot failed to load on the default path (above; see $log)"
fi

# --- CRI conformance: critest, runc and gondolin side by side (docs/limits.md) ------------
say "CRI conformance: hack/critest.sh (runc, then gondolin)"
GONDOLIN_CRITEST_RESULTS="$tmp/critest" hack/critest.sh

# --- pass 2: the booted path ---------------------------------------------------------
cat >"$tmp/booted.toml" <<CONFIG
# hack/integration.sh: the booted path (the system's QEMU and QEMU's C virtiofsd).
qemu_path = "$system_qemu"
virtiofsd_path = "$c_virtiofsd"
snapshot_boot = false
# The plainest path: no VM pool (pass 1 runs with the default pool).
vm_pool_size = 0
CONFIG
cp "$GONDOLIN_DEV_TEST_CONFIG" "$tmp/gondolin-test.toml.orig"
trap 'cp "$tmp/gondolin-test.toml.orig" "$GONDOLIN_DEV_TEST_CONFIG"; hack/dev-down.sh; rm -rf "$tmp"' EXIT
cp "$tmp/booted.toml" "$GONDOLIN_DEV_TEST_CONFIG"
say "the booted path ($system_qemu, $c_virtiofsd, snapshot_boot = false): a smoke run of $SMOKE"
start=$(lines)
GONDOLIN_TEST_RUNTIME_CONFIG="$tmp/booted.toml" GONDOLIN_TEST_DOCKER_RUNTIME=gondolin-test GONDOLIN_TEST_CRI_HANDLER=gondolin-test \
	go test -tags integration -count=1 -v -timeout 20m ./integration/... "$@" -run "$SMOKE"
cp "$tmp/gondolin-test.toml.orig" "$GONDOLIN_DEV_TEST_CONFIG"
read -r resumed booted pooled < <(count_boots "$start" "$tmp/booted.log")
say "booted path: $booted VMs booted, $resumed resumed"
((booted > 0 && resumed == 0 && pooled == 0)) || die "the booted path's smoke run resumed $resumed VMs, took $pooled from a VM pool and booted $booted: want boots only (see $log)"
# The shim logs each VMM command line at debug level, which dev-up's containerd runs at.
grep -aq "starting $system_qemu " "$tmp/booted.log" || die "the booted path's smoke run never started $system_qemu (see $log)"
