#!/usr/bin/env bash
# Runs every Go fuzz target of the repository (func FuzzX(f *testing.F) in a
# _test.go file) for FUZZTIME each (default 60s), one after another, and
# prints each target's outcome and a summary. Exit status 1 if any failed.
#
#   FUZZTIME=5s hack/fuzz.sh           a short pass
#   FUZZBUDGET=150 hack/fuzz.sh         about 150 s in all, shared among the targets
#                                       (at least 2 s each): what make test runs
#   FUZZ='Ingress|Header' hack/fuzz.sh  only targets whose name matches
#   FUZZPARALLEL=1 hack/fuzz.sh         fuzzing workers per target (go's -parallel)
#
# The corpus is Go's: seeds in each package's testdata/fuzz/FuzzX/ (run as
# plain tests by go test ./... too), what the fuzzer learns in the Go build
# cache. An input that fails is written to testdata/fuzz/FuzzX/ of its
# package: commit it with the fix, so it stays a regression test.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
GO="${GO:-go}"
FUZZTIME="${FUZZTIME:-60s}"
FUZZ="${FUZZ:-.}"
parallel=()
[[ -n ${FUZZPARALLEL:-} ]] && parallel=(-parallel "$FUZZPARALLEL")

# Packages with a fuzz target: go test -list asks the compiler (build tags,
# test files that are not compiled), over the packages whose test files
# mention one.
mapfile -t dirs < <(git ls-files -z --cached --others --exclude-standard -- '*_test.go' |
	xargs -0 -r grep -lE '^func Fuzz[A-Z0-9_]' | xargs -r -n1 dirname | sort -u | sed 's|^|./|')
targets=()
declare -a summary
failed=0
for dir in "${dirs[@]}"; do
	# A directory in a module of its own (bench/) is listed from there.
	if ! list="$(cd "$dir" && "$GO" test -list '^Fuzz' . 2>&1)"; then
		# A package that does not build must not drop its targets silently.
		echo "$list" | tail -20
		echo "[fuzz.sh] FAIL  $dir: cannot list its fuzz targets"
		summary+=("FAIL  $dir (does not build)")
		failed=1
		continue
	fi
	while read -r name; do
		[[ $name =~ ^Fuzz ]] && [[ $name =~ $FUZZ ]] && targets+=("$dir $name")
	done <<<"$list"
done
((${#targets[@]})) || { echo "[fuzz.sh] no fuzz target matches '$FUZZ'" >&2; exit 1; }

if [[ -n ${FUZZBUDGET:-} ]]; then
	# Each run also spends about 3 s building and starting its workers.
	per=$((FUZZBUDGET / ${#targets[@]} - 3))
	FUZZTIME="$((per < 5 ? 5 : per))s"
fi
echo "[fuzz.sh] ${#targets[@]} fuzz targets, $FUZZTIME each"

# fuzz_once DIR NAME TIME LOG: one fuzzing run of target NAME in package DIR.
fuzz_once() {
	(cd "$1" && "$GO" test -run '^$' -fuzz "^$2\$" -fuzztime "$3" "${parallel[@]}" .) >"$4" 2>&1
}
start_all=$SECONDS
for t in "${targets[@]}"; do
	read -r dir name <<<"$t"
	log="$(mktemp /tmp/gondolin-fuzz.XXXXXX)"
	start=$SECONDS
	rc=0
	fuzz_once "$dir" "$name" "$FUZZTIME" "$log" || rc=$?
	# Go counts -fuzztime from the start, the pass over the corpus already
	# found (seeds and the build cache's) included: a corpus that takes
	# longer to replay ends in "context deadline exceeded" with no input
	# written. That is not a finding: run once more with room for it.
	if ((rc != 0)) && ! grep -q 'Failing input written' "$log" && grep -q 'context deadline exceeded' "$log"; then
		again=60s
		[[ $FUZZTIME =~ ^[0-9]+s$ ]] && again="$((${FUZZTIME%s} * 4 + 10))s"
		echo "[fuzz.sh] $name: replaying its corpus took longer than $FUZZTIME; again with $again"
		rc=0
		fuzz_once "$dir" "$name" "$again" "$log" || rc=$?
	fi
	if ((rc == 0)); then
		execs="$(grep -oE 'execs: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)"
		line="ok    $dir $name ($((SECONDS - start))s, ${execs:-?} execs)"
	else
		failed=1
		line="FAIL  $dir $name ($((SECONDS - start))s)"
		# What failed: the fuzzer's report, and where it saved the input.
		grep -vE '^fuzz: elapsed' "$log" | tail -40
	fi
	rm -f "$log"
	echo "[fuzz.sh] $line"
	summary+=("$line")
done
echo "[fuzz.sh] done in $((SECONDS - start_all))s:"
printf '  %s\n' "${summary[@]}"
exit "$failed"
