#!/usr/bin/env bash
# stop-registry.sh DIR [--purge]
#
# Stops the registry start-registry.sh started from DIR (by the pid in
# DIR/registry.pid) and waits for it to exit. --purge also removes DIR.
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 DIR [--purge]" >&2; exit 2; }
dir=$1
if [[ -f $dir/registry.pid ]]; then
	pid=$(cat "$dir/registry.pid")
	if kill "$pid" 2>/dev/null; then
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$dir/registry.pid"
fi
if [[ ${2:-} == --purge ]]; then
	rm -rf "$dir"
fi
