#!/usr/bin/env bash
# Pastes `vmpod config default` into README.md, docs/configuration.md and
# the DaemonSet's vmpod.toml (deploy/base/10-config.yaml, below its own
# header comment, with cgroup_driver = 'systemd'). pkg/config's tests
# TestDocsShowDefaultConfig and TestDeployConfigIsTheDefault fail until
# this has run after a change to a configuration key or its help.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
def=$(mktemp)
trap 'rm -f "$def"' EXIT
go run ./cmd/vmpod config default > "$def"
python3 - "$def" <<'PY'
import sys
new = open(sys.argv[1]).read()
for p in ['README.md', 'docs/configuration.md']:
    s = open(p).read()
    i = s.index('```toml\n# vmpod configuration')
    j = s.index('```', i + 7)
    open(p, 'w').write(s[:i] + '```toml\n' + new + s[j:])

p = 'deploy/base/10-config.yaml'
s = open(p).read()
key = '  vmpod.toml: |\n'
start = s.index(key) + len(key)
lines = s[start:].split('\n')
n = 0
while n < len(lines) and (lines[n].startswith('    ') or lines[n] == ''):
    n += 1
block, rest = lines[:n], lines[n:]
# The DaemonSet's header: its comment lines up to the first blank line.
header = []
for l in block:
    if not l.strip():
        break
    header.append(l)
first_key = new.index('# Path of the CRI gRPC unix socket')
body = new[first_key:].replace("cgroup_driver = 'cgroupfs'", "cgroup_driver = 'systemd'", 1)
out = header + [''] + [('    ' + l) if l else '' for l in body.rstrip('\n').split('\n')]
open(p, 'w').write(s[:start] + '\n'.join(out) + '\n' + '\n'.join(rest))
PY
