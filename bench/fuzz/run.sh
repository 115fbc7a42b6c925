#!/usr/bin/env bash
# Fuzzes every target longer than CI does: hack/fuzz.sh with a minute per
# target by default, new inputs minimized (10 s each) and kept in go's fuzz
# cache, so each run starts from what the previous ones found. It prints,
# per target, the inputs run, inputs per second and new inputs found (new
# coverage), and keeps the table in $FUZZ_OUT (default /tmp/vmpod-fuzz).
# Needs no root, libvirtd or network beyond 127.0.0.1.
#
# usage: bench/fuzz/run.sh [-t DURATION] [REGEXP]
#   -t  how long each target fuzzes (default $FUZZTIME, else 1m)
#   REGEXP picks targets by name, e.g. 'Pull|Layers'
#
# A target that finds a failing input ends with that input in
# <package>/testdata/fuzz/<target>/ and its path printed; fix the bug and
# check the input in as a seed (see docs/reliability.md).
set -euo pipefail
cd "$(dirname "$0")/../.."

fuzztime=${FUZZTIME:-1m}
while getopts "t:" opt; do
	case $opt in
	t) fuzztime=$OPTARG ;;
	*) sed -n '/^# usage/,/^#   REGEXP/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
out=${FUZZ_OUT:-/tmp/vmpod-fuzz}
mkdir -p "$out"
report=$out/report-$(date -u +%Y%m%dT%H%M%SZ).txt
{
	echo "vmpod fuzzing, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$report"
status=0
hack/fuzz.sh -t "$fuzztime" -m "${FUZZ_MINIMIZE:-10s}" "$@" | tee -a "$report" || status=$?
echo "report: $report"
exit "$status"
