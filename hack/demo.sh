#!/usr/bin/env bash
# make demo: start the private containerd (make dev-up) and run one container
# in a micro-VM, printing what proves it is one.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

hack/dev-up.sh
# shellcheck source=/dev/null
source .cache/dev/env

id="demo-$(date +%s)"
echo
echo "+ ctr run --rm --runtime io.containerd.gondolin.v1 $GONDOLIN_TEST_IMAGE $id sh -c 'uname -r; exit 3'"
start=$(date +%s.%N)
set +e
guest_kernel=$(ctr run --rm --runtime io.containerd.gondolin.v1 "$GONDOLIN_TEST_IMAGE" "$id" sh -c 'uname -r; exit 3')
status=$?
set -e
end=$(date +%s.%N)

accel=$(grep -a "accelerator chosen" .cache/dev/containerd.log | tail -n 1 | sed -n 's/.*accel=\([a-z]*\).*/\1/p')
reason=$(grep -a "accelerator chosen" .cache/dev/containerd.log | tail -n 1 | sed -n 's/.*reason="\([^"]*\)".*/\1/p')
echo
echo "guest kernel:  $guest_kernel"
echo "host kernel:   $(uname -r)"
echo "accelerator:   ${accel:-unknown} (${reason:-see .cache/dev/containerd.log})"
echo "exit status:   $status (the container ran 'exit 3')"
awk -v s="$start" -v e="$end" 'BEGIN { printf "wall time:     %.2f s\n", e - s }'
if [[ -n ${DOCKER_HOST:-} ]]; then
	echo
	echo "+ docker run --rm $GONDOLIN_TEST_IMAGE uname -r    # gondolin is the dev dockerd's default runtime"
	docker_kernel=$(docker run --rm "$GONDOLIN_TEST_IMAGE" uname -r)
	echo "guest kernel under docker: $docker_kernel"
	[ "$docker_kernel" != "$(uname -r)" ]
fi
echo
echo "The private containerd keeps running: 'source .cache/dev/env' to use ctr against it, 'make dev-down' to stop it."
[ "$status" -eq 3 ] && [ "$guest_kernel" != "$(uname -r)" ]
