#!/usr/bin/env bash
# make-htpasswd.sh FILE USER PASSWORD
#
# Writes an htpasswd file with one bcrypt entry, the only hash
# docker-registry accepts. Uses htpasswd -B (apache2-utils) when
# installed, else Python's crypt module (glibc/libxcrypt bcrypt).
set -euo pipefail
[[ $# -eq 3 ]] || { echo "usage: $0 FILE USER PASSWORD" >&2; exit 2; }
file=$1 user=$2 pass=$3
if command -v htpasswd >/dev/null; then
	htpasswd -Bbc "$file" "$user" "$pass" 2>/dev/null
	exit 0
fi
hash=$(PASS=$pass python3 -W ignore -c '
import crypt, os
print(crypt.crypt(os.environ["PASS"], crypt.mksalt(crypt.METHOD_BLOWFISH)))
' 2>/dev/null) || true
if [[ $hash != \$2* ]]; then
	echo "$0: no bcrypt: apt-get install apache2-utils" >&2
	exit 1
fi
printf '%s:%s\n' "$user" "$hash" >"$file"
