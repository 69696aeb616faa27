#!/usr/bin/env bash
# Runs the end-to-end tests against a fresh private containerd (make dev-up)
# and tears it down afterwards, whatever the result.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

hack/dev-down.sh >/dev/null 2>&1 || true
hack/dev-up.sh
trap 'hack/dev-down.sh' EXIT
# shellcheck source=/dev/null
source .cache/dev/env

go test -tags integration -count=1 -v -timeout 60m ./integration/... "$@"
