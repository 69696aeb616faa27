#!/usr/bin/env bash
# Runs the end-to-end tests against a fresh private containerd (make dev-up)
# and tears it down afterwards, whatever the result. The suite runs twice:
# once on the default boot path, and once more with every container whose
# test names no runtime config of its own resumed from a VM snapshot (QEMU 10
# and the Rust virtiofsd from make tools), so that each test covers both.
# dockerd's tests run once: dockerd starts its containers with the built-in
# config.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

die() { echo "[integration.sh] $*" >&2; exit 1; }

qemu="$repo/.cache/tools/qemu/usr/bin/qemu-system-x86_64"
virtiofsd="$repo/.cache/tools/bin/virtiofsd"
[[ -x $qemu && -x $virtiofsd ]] || die "the snapshot pass needs $qemu and $virtiofsd: run make tools"

snapdir="$(mktemp -d /tmp/gondolin-snapshot-pass.XXXXXX)"
hack/dev-down.sh >/dev/null 2>&1 || true
hack/dev-up.sh
trap 'hack/dev-down.sh; rm -rf "$snapdir"' EXIT
# shellcheck source=/dev/null
source .cache/dev/env

go test -tags integration -count=1 -v -timeout 60m ./integration/... "$@"

cat >"$snapdir/config.toml" <<CONFIG
qemu_path = "$qemu"
virtiofsd_path = "$virtiofsd"
snapshot_boot = true
snapshot_dir = "$snapdir/states"
CONFIG
echo "[integration.sh] the suite again, resuming VMs from snapshots ($snapdir/config.toml)"
GONDOLIN_TEST_RUNTIME_CONFIG="$snapdir/config.toml" \
	go test -tags integration -count=1 -v -timeout 60m -skip '^TestDocker' ./integration/... "$@"
# snapshot_boot = true boots (with a warning) when a snapshot cannot be made
# or loaded: make sure this pass resumed VMs.
compgen -G "$snapdir/states/*.state" >/dev/null ||
	die "the snapshot pass saved no VM state in $snapdir/states: its VMs booted instead of resuming (see the shim log in $GONDOLIN_DEV_CONTAINERD_LOG)"
if compgen -G "$snapdir/states/*.error" >/dev/null; then
	die "the snapshot pass could not make or load a snapshot: $(cat "$snapdir"/states/*.error)"
fi
