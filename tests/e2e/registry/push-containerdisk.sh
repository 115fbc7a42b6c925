#!/usr/bin/env bash
# push-containerdisk.sh IMAGE REF [USER:PASSWORD]
#
# Packs the disk image file IMAGE (qcow2 or raw) as a KubeVirt
# containerDisk and pushes it to REF (e.g. 127.0.0.1:5000/vms/cirros:1)
# with skopeo, over plain HTTP. The image is an OCI image with one gzip
# layer holding disk/ (0555) and disk/<basename of IMAGE> (0444), both
# owned by 107:107 (qemu in KubeVirt's images), as
# `FROM scratch` + `ADD --chown=107:107 IMAGE /disk/` builds it; its
# config says linux/amd64 (ARCH overrides the architecture).
# The layout is assembled in a temp dir and removed afterwards; prints
# the pushed manifest digest.
# Env: COMPRESS=gzip|none (default gzip) chooses the layer's compression;
# DISK_DIR (default disk) puts the file in another directory, to make an
# image that is not a containerDisk (for negative tests).
set -euo pipefail

usage() { echo "usage: $0 IMAGE REF [USER:PASSWORD]" >&2; exit 2; }
[[ $# -ge 2 && $# -le 3 ]] || usage
image=$1 ref=$2 creds=${3:-}
[[ -f $image ]] || { echo "$0: $image is not a file" >&2; exit 1; }
arch=${ARCH:-amd64}
compress=${COMPRESS:-gzip}
diskdir=${DISK_DIR:-disk}
name=$(basename "$image")
srcdir=$(cd "$(dirname "$image")" && pwd)

work=$(mktemp -d /tmp/vmpod-containerdisk-XXXXXX)
trap 'rm -rf "$work"' EXIT
layout=$work/layout
mkdir -p "$layout/blobs/sha256" "$work/empty/$diskdir"

# put FILE MEDIATYPE: moves FILE into the layout, prints its descriptor.
put() {
	local f=$1 mt=$2 d size
	d=$(sha256sum "$f" | cut -d' ' -f1)
	size=$(stat -c %s "$f")
	mv "$f" "$layout/blobs/sha256/$d"
	printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$mt" "$d" "$size"
}

# The layer: the disk/ directory entry, then the file renamed into it. No
# staging copy of the disk: tar reads it in place.
tar_layer() {
	tar --create --format=pax --pax-option=delete=atime,delete=ctime \
		--numeric-owner --owner=107 --group=107 --mtime=@0 --no-recursion \
		--mode=a=rX \
		-C "$work/empty" "$diskdir" \
		-C "$srcdir" --transform="s,^$(printf '%s' "$name" | sed 's/[.[\*^$,]/\\&/g')\$,$diskdir/$name," "$name"
}
case $compress in
gzip)
	layer_mt=application/vnd.oci.image.layer.v1.tar+gzip
	# The uncompressed tar's digest (the config's diff ID) is taken on the
	# way; the renaming makes its appearance atomic.
	tar_layer | tee >(sha256sum | cut -d' ' -f1 >"$work/diffid.tmp" && mv "$work/diffid.tmp" "$work/diffid") |
		gzip -n >"$work/layer"
	;;
none)
	layer_mt=application/vnd.oci.image.layer.v1.tar
	tar_layer >"$work/layer"
	sha256sum "$work/layer" | cut -d' ' -f1 >"$work/diffid"
	;;
*)
	echo "$0: COMPRESS must be gzip or none" >&2
	exit 2
	;;
esac
# The process substitution may still be finishing.
for _ in $(seq 1 200); do [[ -s $work/diffid ]] && break; sleep 0.05; done
diffid=$(cat "$work/diffid")
[[ ${#diffid} -eq 64 ]] || { echo "$0: could not digest the layer" >&2; exit 1; }
layer=$(put "$work/layer" "$layer_mt")

printf '{"architecture":"%s","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"vmpod push-containerdisk.sh: ADD --chown=107:107 %s /%s/"}]}' \
	"$arch" "$diffid" "$name" "$diskdir" >"$work/config"
config=$(put "$work/config" application/vnd.oci.image.config.v1+json)

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
	"$config" "$layer" >"$work/manifest"
manifest=$(put "$work/manifest" application/vnd.oci.image.manifest.v1+json)

printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
printf '{"schemaVersion":2,"manifests":[%s]}' \
	"$(printf '%s' "$manifest" | sed 's/}$/,"annotations":{"org.opencontainers.image.ref.name":"disk"}}/')" \
	>"$layout/index.json"

args=(--insecure-policy copy --preserve-digests --dest-tls-verify=false)
if [[ -n $creds ]]; then
	# An auth file rather than --dest-creds keeps the password out of ps.
	printf '{"auths":{"%s":{"auth":"%s"}}}' "${ref%%/*}" "$(printf '%s' "$creds" | base64 -w0)" >"$work/auth.json"
	args+=(--dest-authfile "$work/auth.json")
fi
skopeo "${args[@]}" --quiet "oci:$layout:disk" "docker://$ref" >&2
printf '%s\n' "$manifest" | sed 's/.*"digest":"\([^"]*\)".*/\1/'
