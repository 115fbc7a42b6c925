#!/usr/bin/env bash
# Runs every Go fuzz target of vmpod (each func FuzzXxx(f *testing.F) in a
# _test.go file under pkg/ and internal/), one after the other, each for a
# while, and prints per target how many inputs it ran, how many per second,
# and how many new inputs it found ("new interesting": inputs that reached
# new code, kept in the fuzz cache, $(go env GOCACHE)/fuzz, for later runs).
# hack/test.sh runs it for a few seconds per target, bench/fuzz/run.sh for
# longer.
#
# usage: hack/fuzz.sh [-t DURATION] [-m MINIMIZE] [-p WORKERS] [-c CORPUS] [REGEXP]
#   -t  how long each target fuzzes: a Go duration (3s, 2m) or a count of
#       inputs (5000x); default $FUZZTIME, else 3s
#   -m  how long a new or failing input is minimized (go test's
#       -fuzzminimizetime); default $FUZZ_MINIMIZE, else 1x (none: short
#       runs are better spent fuzzing, and the engine's minimization is
#       where it most often reports a worker lost at the end of a run)
#   -p  fuzzing processes per target (go test's -parallel); default
#       $FUZZ_PARALLEL, else GOMAXPROCS
#   -c  where the inputs found are kept and read again: a directory, or
#       "none" to start every run from the checked-in seeds only (a run
#       first replays the whole kept corpus, which grows from run to run
#       and can eat a short run: hack/test.sh uses none); default
#       $FUZZ_CORPUS, else go's own cache ($(go env GOCACHE)/fuzz), shared
#       with go test -fuzz
#   REGEXP picks targets by name (default: all)
#
# Why one at a time: Go fuzzes one target per package per run, and the
# machine is shared. Each package's test binary is built once (go test -c
# -fuzz) and run for each of its targets.
#
# Failures. A target that finds a failing input fails the script: Go writes
# the input to <package>/testdata/fuzz/<target>/<id> (from then on go test
# runs it as a seed), and the script prints that path, the failure and the
# command that re-runs it.
#
# The fuzzing engine of Go 1.26 fails runs by itself now and then, more
# often on a loaded machine: "context deadline exceeded" at the end of
# -fuzztime with no input (golang/go#75804, fixed in Go 1.27), or a worker
# that "hung or terminated unexpectedly", often while minimizing
# (golang/go#52569, golang/go#56238), with an input that passes when run
# alone. So a failing input is first run again by itself (a hang there
# fails after 2 minutes); the script fails when it fails again. When it
# passes, or when the engine failed without an input, the script says so,
# moves any such input out of the source tree to $FUZZ_OUT (default
# /tmp/vmpod-fuzz) and runs the target once more; a second engine failure
# is reported in the table ("engine failure twice") without failing the
# script, since nothing was found. Any other failure (a build error, a
# checked-in seed that fails) fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

fuzztime=${FUZZTIME:-3s}
minimize=${FUZZ_MINIMIZE:-1x}
parallel=${FUZZ_PARALLEL:-}
corpus=${FUZZ_CORPUS:-}
while getopts "t:m:p:c:" opt; do
	case $opt in
	t) fuzztime=$OPTARG ;;
	m) minimize=$OPTARG ;;
	p) parallel=$OPTARG ;;
	c) corpus=$OPTARG ;;
	*) sed -n '/^# usage/,/^#   REGEXP/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
pick=${1:-.}
out=${FUZZ_OUT:-/tmp/vmpod-fuzz}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
module=$(go list -m)
case $corpus in
"") cache=$(go env GOCACHE)/fuzz ;;
none) cache=$work/corpus ;;
*) cache=$corpus ;;
esac

# The targets, as "package-dir target" lines, sorted.
targets=$(grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' pkg internal 2>/dev/null |
	sed -E 's#^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*#\1 \2#' | sort -u |
	awk -v re="$pick" '$2 ~ re')
if [ -z "$targets" ]; then
	echo "hack/fuzz.sh: no fuzz target matches $pick" >&2
	exit 2
fi

# seconds converts a Go duration (1h2m3.5s, 45s, 300ms) to seconds.
seconds() {
	awk -v d="$1" 'BEGIN {
		s = 0
		while (match(d, /^[0-9.]+(h|ms|m|s)/)) {
			part = substr(d, 1, RLENGTH); d = substr(d, RLENGTH + 1)
			n = part + 0; u = part; sub(/^[0-9.]+/, "", u)
			s += (u == "h") ? n * 3600 : (u == "m") ? n * 60 : (u == "ms") ? n / 1000 : n
		}
		print s
	}'
}

# run_target DIR TARGET LOG: fuzzes once; its exit status is the binary's.
run_target() {
	local dir=$1 name=$2 log=$3 bin
	bin=$work/$(echo "$dir" | tr / _).test
	local args=(-test.run='^$' -test.fuzz="^$name\$" -test.fuzztime="$fuzztime"
		-test.fuzzminimizetime="$minimize" -test.fuzzcachedir="$cache/$module/$dir" -test.timeout=0)
	[ -n "$parallel" ] && args+=(-test.parallel="$parallel")
	(cd "$dir" && "$bin" "${args[@]}") >"$log" 2>&1 </dev/null
}

# reproduces DIR TARGET INPUT: whether the input fails when run alone.
reproduces() {
	local dir=$1 name=$2 input=$3 bin
	bin=$work/$(echo "$dir" | tr / _).test
	! (cd "$dir" && "$bin" -test.run="^$name\$/^$(basename "$input")\$" -test.timeout=2m) >"$work/rerun.log" 2>&1 </dev/null
}

failed=0
summary=$work/summary
printf '%-24s %-28s %10s %9s %5s %7s  %s\n' target package execs execs/s new corpus result >"$summary"
start=$SECONDS
built=""
while read -r dir name <&3; do
	bin=$work/$(echo "$dir" | tr / _).test
	if [[ " $built " != *" $dir "* ]]; then
		if ! go test -c -fuzz=. -o "$bin" "./$dir" >"$work/build.log" 2>&1 </dev/null; then
			cat "$work/build.log" >&2
			printf '%-24s %-28s %10s %9s %5s %7s  %s\n' "$name" "$dir" - - - - "FAILED to build" >>"$summary"
			failed=1
			continue
		fi
		built="$built $dir"
	fi
	log=$work/$name.log
	result=ok
	for attempt in 1 2; do
		if run_target "$dir" "$name" "$log"; then
			[ "$attempt" = 1 ] && result=ok || result="ok on the second run"
			break
		fi
		input=$(grep -Eo 'testdata/fuzz/[^ ]+' "$log" | tail -1 || true)
		if [ -n "$input" ] && reproduces "$dir" "$name" "$input"; then
			echo "== $name ($dir) FAILED:" >&2
			awk '!/^fuzz: elapsed/ && n++ < 60' "$log" >&2
			echo "== failing input: $dir/$input" >&2
			echo "== re-run it with: go test -run '^$name\$/^$(basename "$input")\$' ./$dir" >&2
			result="FAILED: $dir/$input"
			break
		elif [ -n "$input" ]; then
			engine="a worker was lost, its input passes alone"
		elif grep -Eq '^[[:space:]]+context deadline exceeded$' "$log"; then
			engine="context deadline exceeded at the end of -fuzztime, no input (golang/go#75804)"
		else
			echo "== $name ($dir) FAILED:" >&2
			awk '!/^fuzz: elapsed/ && n++ < 60' "$log" >&2
			result="FAILED (no input written; see above)"
			break
		fi
		echo "== $name ($dir): the fuzzing engine failed: $engine:" >&2
		awk '!/^fuzz: elapsed/ && n++ < 20' "$log" >&2
		if [ -n "$input" ] && ! git ls-files --error-unmatch "$dir/$input" >/dev/null 2>&1; then
			kept=$out/$name-$(basename "$input")
			mv "$dir/$input" "$kept"
			rmdir -p "$dir/testdata/fuzz/$name" 2>/dev/null || true
			echo "== moved the input to $kept" >&2
		fi
		[ "$attempt" = 1 ] && result="engine failure" || result="engine failure twice, no failing input"
	done
	case $result in FAILED*) failed=1 ;; esac
	# The last progress line: "fuzz: elapsed: 3s, execs: 101614 (33868/sec),
	# new interesting: 33 (total: 39)".
	last=$(grep -E '^fuzz: elapsed: [^,]+, execs: ' "$log" | tail -1 || true)
	if [ -n "$last" ]; then
		elapsed=$(seconds "$(sed -E 's/^fuzz: elapsed: ([^,]+),.*/\1/' <<<"$last")")
		execs=$(sed -E 's/.*execs: ([0-9]+).*/\1/' <<<"$last")
		newi=$(sed -E 's/.*new interesting: ([0-9]+).*/\1/' <<<"$last")
		total=$(sed -E 's/.*\(total: ([0-9]+)\).*/\1/' <<<"$last")
		rate=$(awk -v e="$execs" -v s="$elapsed" 'BEGIN { printf "%d", (s > 0 ? e / s : e) }')
	else
		execs=- rate=- newi=- total=-
	fi
	printf '%-24s %-28s %10s %9s %5s %7s  %s\n' "$name" "$dir" "$execs" "$rate" "$newi" "$total" "$result" >>"$summary"
done 3<<<"$targets"

cat "$summary"
echo "targets: $(wc -l <<<"$targets"), $fuzztime each, in $((SECONDS - start))s"
exit $failed
