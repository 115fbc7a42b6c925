#!/usr/bin/env bash
# Builds the vmpod image (the Dockerfile's image) on a Debian 12 machine
# without a registry or a container runtime, as root, into an OCI archive
# that `ctr -n k8s.io images import`, skopeo and podman load:
#
#   1. the base: Debian 12 (minbase) with the packages of
#      deploy/image/packages, made by mmdebstrap from Debian's archive
#      (apt checks the archive's signatures) and kept in a cache, since
#      it is the slow part (about 2 minutes);
#   2. vmpod, built here with the version stamped in;
#   3. hack/imagebuild puts the files of the Dockerfile's final stage over
#      the base, with its ENTRYPOINT and CMD, and writes the archive.
#
#   hack/build-image.sh                       # _output/vmpod-<version>.tar, image vmpod:<version>
#   hack/build-image.sh --tag v0.1.0 --name registry.example/vmpod --out vmpod.tar
#   hack/build-image.sh --refresh-base        # rebuild the cached base now
#   hack/build-image.sh --print-version       # print the default tag and exit
#
# The version (the tag, and what `vmpod version` and the CRI Version call
# report) is pkg/version's followed by the commit, e.g. 0.1.0-dev-g1a026b5c1f2e
# (-dirty when the work tree has changes). The cached base is rebuilt when
# the package list or this recipe changes, and when it is older than
# VMPOD_IMAGE_BASE_MAX_AGE_DAYS (default 7) so that Debian's security
# updates reach the image. VMPOD_IMAGE_CACHE (default
# /var/cache/vmpod-e2e/image) holds it. The last line printed is
# "<archive> <image> <digest>".
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/local/bin:/usr/sbin:/sbin

name=vmpod
tag=
out=
refresh=false
print_version=false
while (($#)); do
	case $1 in
	--print-version) print_version=true; shift ;;
	--tag) tag=$2; shift 2 ;;
	--name) name=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--refresh-base) refresh=true; shift ;;
	*) echo "build-image: unknown argument $1 (see the comment at the top of $0)" >&2; exit 2 ;;
	esac
done

if [ -z "$tag" ]; then
	base_version=$(sed -n 's/^var Version = "\(.*\)"$/\1/p' pkg/version/version.go)
	tag=$base_version-g$(git rev-parse --short=12 HEAD)
	if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
		tag=$tag-dirty
	fi
fi
# A tag as registries and containerd accept it.
if ! [[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
	echo "build-image: tag \"$tag\" is not a valid image tag (letters, digits, _ . -, at most 128, not starting with . or -)" >&2
	exit 2
fi
if $print_version; then
	echo "$tag"
	exit 0
fi
out=${out:-_output/vmpod-$tag.tar}
mkdir -p "$(dirname "$out")"

command -v mmdebstrap >/dev/null || {
	echo "build-image: mmdebstrap is missing (hack/install-deps.sh installs it, or apt-get install mmdebstrap)" >&2
	exit 1
}

start=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. The base, cached under a key made of everything that shapes it.
cache=${VMPOD_IMAGE_CACHE:-/var/cache/vmpod-e2e/image}
max_age=${VMPOD_IMAGE_BASE_MAX_AGE_DAYS:-7}
suite=bookworm
mirror=${VMPOD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${VMPOD_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
packages=$(grep -v -e '^#' -e '^$' deploy/image/packages | paste -sd, -)
mmdebstrap_args=(
	--variant=minbase --mode=root
	# Merged /usr as in debian:12, without the usrmerge package (and perl).
	--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
	--aptopt='APT::Install-Recommends "false"'
	--setup-hook='mkdir -p "$1/etc/dpkg/dpkg.cfg.d"'
	--setup-hook='upload deploy/image/dpkg-slim.cfg /etc/dpkg/dpkg.cfg.d/vmpod-slim'
	# dpkg-slim.cfg reaches the packages dpkg installs, not the Essential
	# ones mmdebstrap unpacks before (36 MB of their documentation and
	# translations, measured); remove those as the Dockerfile removes
	# debian:12's.
	--customize-hook='find "$1/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete'
	--customize-hook='find "$1/usr/share/man" "$1/usr/share/info" "$1/usr/share/locale" "$1/usr/share/lintian" -mindepth 1 -delete'
	--include="$packages"
	# The build machine's name and resolver are not the image's.
	--customize-hook='rm -f "$1/etc/hostname" "$1/etc/resolv.conf" "$1/etc/.pwd.lock"'
	# Container runtimes make /dev.
	--skip=output/dev
	"$suite" -
	"deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main"
)
key=$( { printf '%s\n' "${mmdebstrap_args[@]}"; cat deploy/image/packages deploy/image/dpkg-slim.cfg; } | sha256sum | cut -c1-16)
base=$cache/base-$suite-$key.tar.gz
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 # one base build at a time
if $refresh || [ ! -s "$base" ] || [ -n "$(find "$base" -mtime +"$max_age")" ]; then
	echo "build-image: building the base ($suite + $(tr , ' ' <<<"$packages")) into $base"
	t=$SECONDS
	if ! mmdebstrap "${mmdebstrap_args[@]}" 2>"$work/mmdebstrap.log" | gzip -n >"$base.tmp"; then
		tail -40 "$work/mmdebstrap.log" >&2
		echo "build-image: mmdebstrap failed (its log's tail is above)" >&2
		rm -f "$base.tmp"
		exit 1
	fi
	mv "$base.tmp" "$base"
	# Bases of other recipes (other branches on a shared machine) are kept
	# until they are too old to be used.
	find "$cache" -maxdepth 1 -name "base-$suite-*.tar.gz" ! -path "$base" -mtime +"$max_age" -delete
	echo "build-image: base built in $((SECONDS - t)) s"
else
	echo "build-image: reusing the base $base (built $(date -r "$base" '+%F %T'))"
fi
flock -u 9

# 2. vmpod, with the version stamped in (the Dockerfile's build stage).
t=$SECONDS
CGO_ENABLED=1 go build -trimpath -ldflags "-X github.com/vmpod/vmpod/pkg/version.Version=$tag" -o "$work/vmpod" ./cmd/vmpod
go build -o "$work/imagebuild" ./hack/imagebuild
echo "build-image: vmpod built in $((SECONDS - t)) s"

# 3. The image.
t=$SECONDS
result=$("$work/imagebuild" -dockerfile Dockerfile -context . -base "$base" -base-name debian:12 \
	-from "build:/out/vmpod=$work/vmpod" -ref "$name:$tag" -out "$out" \
	-created "$(git log -1 --format=%ct)" \
	-label "org.opencontainers.image.version=$tag" \
	-label "org.opencontainers.image.revision=$(git rev-parse HEAD)" \
	-label "org.opencontainers.image.base.name=debian:12")
echo "build-image: image assembled in $((SECONDS - t)) s"
echo "build-image: $(du -m "$out" | cut -f1) MiB archive, $(( $(gzip -l "$base" | awk 'NR==2 {print $2}') / 1048576 + $(stat -c %s "$work/vmpod") / 1048576 )) MiB unpacked; $((SECONDS - start)) s in all"
echo "$result"
