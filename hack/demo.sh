#!/usr/bin/env bash
# make demo: start the private containerd (make dev-up) and run one container
# in a micro-VM, printing what proves it is one.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=hack/lib.sh
source hack/lib.sh

hack/dev-up.sh
# shellcheck source=/dev/null
source .cache/dev/env

log=.cache/dev/containerd.log
id="demo-$(date +%s)"
echo
echo "+ ctr run --rm --runtime io.containerd.gondolin.v1 $GONDOLIN_TEST_IMAGE $id sh -c 'uname -r; exit 3'"
from=$(wc -l <"$log")
start=$(date +%s.%N)
set +e
guest_kernel=$(ctr run --rm --runtime io.containerd.gondolin.v1 "$GONDOLIN_TEST_IMAGE" "$id" sh -c 'uname -r; exit 3')
status=$?
set -e
end=$(date +%s.%N)
# This run's part of the shim log.
run_log=$(tail -n "+$((from + 1))" "$log")

# last_field PATTERN SED: SED applied to this run's last log line matching PATTERN.
last_field() { { grep -a "$1" <<<"$run_log" || true; } | tail -n 1 | sed -n "$2"; }
setup='msg="VM setup chosen"'
accel=$(last_field "$setup" 's/.* accel=\([a-z]*\).*/\1/p')
reason=$(last_field "$setup" 's/.* reason="\([^"]*\)".*/\1/p')
virtiofsd=$(last_field "$setup" 's/.* virtiofsd=\([^ ]*\).*/\1/p')
# The VMM's command line is logged at debug level, which dev-up's containerd runs at.
vmm=$(last_field "starting .* -name gondolin-$id," 's/.*msg="starting \([^ ]*\) .*/\1/p')
boot=$(last_field 'msg="guest agent ready"' 's/.* boot=\([a-z]*\).*/\1/p')
case $boot in
snapshot) vm_start="resumed from a VM snapshot" ;;
pool) vm_start="taken from the VM pool (resumed and warmed up before the container was created)" ;;
cold) vm_start="booted (this QEMU and virtiofsd cannot save a VM, see docs/install.md)" ;;
*) vm_start="unknown (see $log)" ;;
esac
made=false
grep -aq 'msg="saved a VM snapshot"' <<<"$run_log" && made=true
echo
echo "guest kernel:  $guest_kernel"
echo "host kernel:   $(uname -r)"
echo "accelerator:   ${accel:-unknown} (${reason:-see $log})"
qemu_version=unknown
[[ -z $vmm ]] || qemu_version=$("$vmm" --version 2>/dev/null | sed -n 1p)
echo "QEMU:          ${vmm:-unknown} ($qemu_version)"
echo "virtiofsd:     ${virtiofsd:-unknown}"
echo "VM start:      $vm_start"
echo "exit status:   $status (the container ran 'exit 3')"
awk -v s="$start" -v e="$end" -v m="$made" 'BEGIN { printf "wall time:     %.2f s%s\n", e - s, m == "true" ? " (including making the VM snapshot: a boot and a save, once per VM shape)" : "" }'
if $made; then
	echo
	echo "+ ctr run --rm --runtime io.containerd.gondolin.v1 $GONDOLIN_TEST_IMAGE $id-2 true    # resumes from that snapshot"
	start=$(date +%s.%N)
	ctr run --rm --runtime io.containerd.gondolin.v1 "$GONDOLIN_TEST_IMAGE" "$id-2" true
	end=$(date +%s.%N)
	awk -v s="$start" -v e="$end" 'BEGIN { printf "wall time:     %.2f s\n", e - s }'
fi
# The VM pool (vm_pool_size, docs/configuration.md): the first create started it; once
# it holds a VM of this shape, the next create takes that VM.
# builtin_pool_dir: the directory of this tree's VM pool for the built-in config (the
# pool process of this shim binary without --config).
builtin_pool_dir() {
	local d p sock
	for d in /proc/[0-9]*; do
		p=${d#/proc/}
		# Not a pool of an earlier build (its binary replaced: "(deleted)").
		[[ "$(readlink "/proc/$p/exe" 2>/dev/null)" == "$OUT_BIN/$SHIM_NAME" && "$(cmdline_of "$p" | sed -n 2p)" == vm-pool ]] || continue
		cmdline_of "$p" | grep -qx -- --config && continue
		sock="$(cmdline_of "$p" | awk 'prev == "--socket" {print; exit} {prev = $0}')"
		echo "${sock%.sock}"
		return
	done
}
for ((i = 0; i < 150; i++)); do
	pool=$(builtin_pool_dir)
	[[ -n $pool ]] && grep -aq 'msg="vm pool: VM ready"' "$pool.log" 2>/dev/null && break
	sleep 0.2
done
echo
echo "+ ctr run --rm --runtime io.containerd.gondolin.v1 $GONDOLIN_TEST_IMAGE $id-3 true    # takes a VM from the VM pool"
from=$(wc -l <"$log")
start=$(date +%s.%N)
ctr run --rm --runtime io.containerd.gondolin.v1 "$GONDOLIN_TEST_IMAGE" "$id-3" true
end=$(date +%s.%N)
run_log=$(tail -n "+$((from + 1))" "$log")
boot=$(last_field 'msg="guest agent ready"' 's/.* boot=\([a-z]*\).*/\1/p')
awk -v s="$start" -v e="$end" -v b="$boot" 'BEGIN { printf "wall time:     %.2f s (VM: %s)\n", e - s, b == "pool" ? "from the pool" : b " (the pool had none ready)" }'
if [[ -n ${DOCKER_HOST:-} ]]; then
	echo
	echo "+ docker run --rm $GONDOLIN_TEST_IMAGE uname -r    # gondolin is the dev dockerd's default runtime"
	docker_kernel=$(docker run --rm "$GONDOLIN_TEST_IMAGE" uname -r)
	echo "guest kernel under docker: $docker_kernel"
	[ "$docker_kernel" != "$(uname -r)" ]
fi
echo
echo "The private containerd (and the VM pool its shims started) keeps running: 'source .cache/dev/env' to use ctr against it, 'make dev-down' to stop both."
[ "$status" -eq 3 ] && [ "$guest_kernel" != "$(uname -r)" ]
