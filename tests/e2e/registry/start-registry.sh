#!/usr/bin/env bash
# start-registry.sh PORT [HTPASSWD-FILE]
#
# Starts Debian's docker-registry (package docker-registry) on
# 127.0.0.1:PORT, plain HTTP, storing blobs under $REGISTRY_DIR/storage
# (REGISTRY_DIR defaults to a new temp dir). With HTPASSWD-FILE (bcrypt
# entries, see make-htpasswd.sh) every request needs basic auth.
# Waits until /v2/ answers, then prints REGISTRY_DIR on stdout. The
# registry runs in the background; stop it with stop-registry.sh DIR.
# Its log is DIR/registry.log, its pid DIR/registry.pid.
set -euo pipefail

usage() { echo "usage: $0 PORT [HTPASSWD-FILE]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
port=$1
htpasswd=${2:-}
[[ $port =~ ^[0-9]+$ ]] || usage
bin=${DOCKER_REGISTRY:-/usr/bin/docker-registry}
[[ -x $bin ]] || { echo "$0: $bin missing; apt-get install docker-registry" >&2; exit 1; }
if [[ -n $htpasswd ]]; then
	[[ -r $htpasswd ]] || { echo "$0: cannot read $htpasswd" >&2; exit 1; }
	htpasswd=$(realpath "$htpasswd")
fi

dir=${REGISTRY_DIR:-$(mktemp -d /tmp/vmpod-registry-XXXXXX)}
mkdir -p "$dir/storage"
dir=$(realpath "$dir")
if [[ -f $dir/registry.pid ]] && kill -0 "$(cat "$dir/registry.pid")" 2>/dev/null; then
	echo "$0: a registry already runs from $dir (pid $(cat "$dir/registry.pid"))" >&2
	exit 1
fi

auth=""
if [[ -n $htpasswd ]]; then
	auth="auth:
  htpasswd:
    realm: vmpod-e2e
    path: $htpasswd"
fi
cat >"$dir/config.yml" <<CONF
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  secret: vmpod-e2e-not-secret
$auth
CONF

# setsid: the registry must not die with the caller's terminal or process
# group, and stop-registry.sh kills it by pid.
setsid "$bin" serve "$dir/config.yml" >"$dir/registry.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$dir/registry.pid"

# Up once /v2/ answers 200, or 401 when auth is on.
for _ in $(seq 1 100); do
	code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true)
	if [[ $code == 200 || $code == 401 ]]; then
		echo "$dir"
		exit 0
	fi
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "$0: docker-registry exited; its log:" >&2
		cat "$dir/registry.log" >&2
		rm -f "$dir/registry.pid"
		exit 1
	fi
	sleep 0.1
done
echo "$0: docker-registry did not answer on 127.0.0.1:$port within 10s; its log:" >&2
cat "$dir/registry.log" >&2
kill "$pid" 2>/dev/null || true
rm -f "$dir/registry.pid"
exit 1
