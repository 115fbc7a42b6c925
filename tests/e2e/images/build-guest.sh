#!/usr/bin/env bash
# Builds the vmpod e2e "test guest": a tiny bootable qcow2 disk image.
#
#   MBR (syslinux mbr.bin) -> one bootable ext2 partition with extlinux,
#   the Debian 12 cloud kernel and a busybox initramfs that does everything
#   (modules, DHCP on every NIC, httpd on :8080, acpid, serial shell,
#   the QEMU guest agent on the org.qemu.guest_agent.0 virtio-serial port,
#   util-linux `script` for vmpod's TTY exec).
#
# Usage (as root, on Debian 12):
#   tests/e2e/images/build-guest.sh [OUTPUT.qcow2]
# Default output: tests/e2e/images/out/vmpod-test-guest.qcow2
#
# Environment (all optional):
#   VMPOD_GUEST_WORKDIR      work/cache dir   (default: tests/e2e/images/.work)
#   VMPOD_GUEST_KERNEL_META  kernel meta pkg  (default: linux-image-cloud-amd64)
#   VMPOD_GUEST_CMDLINE      kernel cmdline   (default: see KERNEL_CMDLINE below)
#
# Downloaded .deb files are cached in the work dir (checked against apt's
# SHA256), so a second run needs no download. Guest packages are only
# unpacked with dpkg -x, never installed on the host. See README.md.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:-$SCRIPT_DIR/out/vmpod-test-guest.qcow2}
WORK=${VMPOD_GUEST_WORKDIR:-$SCRIPT_DIR/.work}
KERNEL_META=${VMPOD_GUEST_KERNEL_META:-linux-image-cloud-amd64}
# Kernel command line, tuned for boot time under TCG:
#  quiet                  kernel messages over the emulated UART cost seconds;
#  cryptomgr.notests      skips the crypto self-tests (~0.3 s);
#  initcall_blacklist=    crypto_kdf108_init only runs a KDF self-test and
#                         init_kprobe_trace only creates tracefs kprobe files
#                         (~0.15 s together);
#  nokaslr edd=off        no kernel relocation, no BIOS EDD probing;
#  no_timer_check         skips the IO-APIC timer check, which a vCPU
#                         starved by a loaded host fails ("Kernel panic -
#                         IO-APIC + timer doesn't work!", seen in a full
#                         test run on 2 busy cores); cloud images set it too.
KERNEL_CMDLINE=${VMPOD_GUEST_CMDLINE:-console=ttyS0,115200 quiet cryptomgr.notests initcall_blacklist=crypto_kdf108_init,init_kprobe_trace nokaslr edd=off no_timer_check}

# Kernel modules. Dependencies are resolved from the kernel package (Debian
# ships no modules.dep, so depmod makes one; modprobe --show-depends gives the
# load order).
# Loaded by /init at boot, in this order; they must exist:
BOOT_MODULES=(
	virtio_pci virtio_blk virtio_net virtio_console virtio_scsi sd_mod
	sr_mod iso9660 button evdev
)
# Loaded at boot when this kernel has them (skipped otherwise):
BOOT_MODULES_OPTIONAL=(virtio_rng qemu_fw_cfg)
# Copied into the initramfs when this kernel has them, NOT loaded at boot
# (each insmod costs boot time under TCG): `modprobe NAME` in the guest, or
# the kernel autoloads them (e.g. `mount -t virtiofs` -> fs-virtiofs).
# NOTE: the Debian 12 cloud kernel has CONFIG_NET_9P unset: no 9p at all there
# (9p/9pnet/9pnet_virtio are skipped); virtiofs/fuse are available instead.
ONDEMAND_MODULES=(
	netfs fscache 9pnet 9pnet_virtio 9p fuse virtiofs
	virtio_balloon vmw_vsock_virtio_transport
)

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C

log() { printf '[build-guest] %s\n' "$*" >&2; }
die() { printf '[build-guest] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (needs loop devices, mount, mknod)"

mkdir -p "$WORK/debs"
exec 9>"$WORK/.lock"
flock -w 600 9 || die "another build-guest.sh is running on $WORK"

# ---------------------------------------------------------------- host tools
apt_updated=0
apt_update_once() {
	if [ "$apt_updated" = 0 ]; then
		log "apt-get update"
		apt-get update -qq >&2
		apt_updated=1
	fi
}

find_mbr_bin() {
	local f
	for f in /usr/lib/syslinux/mbr/mbr.bin /usr/lib/EXTLINUX/mbr.bin /usr/share/syslinux/mbr.bin; do
		if [ -f "$f" ]; then echo "$f"; return 0; fi
	done
	return 1
}

ensure_host_tools() {
	local need=()
	command -v extlinux >/dev/null || need+=(extlinux)
	find_mbr_bin >/dev/null || need+=(syslinux-common)
	command -v sfdisk >/dev/null || need+=(fdisk)
	command -v mkfs.ext2 >/dev/null || need+=(e2fsprogs)
	command -v cpio >/dev/null || need+=(cpio)
	command -v depmod >/dev/null || need+=(kmod)
	command -v modprobe >/dev/null || need+=(kmod)
	command -v qemu-img >/dev/null || need+=(qemu-utils)
	command -v gzip >/dev/null || need+=(gzip)
	command -v losetup >/dev/null || need+=(mount)
	command -v dpkg-deb >/dev/null || need+=(dpkg)
	command -v readelf >/dev/null || need+=(binutils)
	find_go >/dev/null || need+=(golang-go)
	if [ "${#need[@]}" -gt 0 ]; then
		mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
		log "installing host tools: ${need[*]}"
		if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2; then
			apt_update_once
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
		fi
	fi
}

# The Go toolchain builds guestinit/ (the guest's mini cloud-init).
find_go() {
	local g
	for g in "$(command -v go || true)" /usr/local/go/bin/go /usr/lib/go/bin/go; do
		if [ -n "$g" ] && [ -x "$g" ]; then echo "$g"; return 0; fi
	done
	return 1
}

# -------------------------------------------------------------- guest debs
# fetch_deb PKG -> prints the path of the cached .deb of apt's candidate
# version (downloads it unless the cached file matches apt's SHA256).
fetch_deb() {
	local pkg=$1 attempt line uri file size sum
	for attempt in 1 2; do
		line=$(apt-get download --print-uris "$pkg" 2>/dev/null | tail -n1 || true)
		if [ -z "$line" ]; then
			[ "$attempt" = 1 ] && { apt_update_once; continue; }
			die "apt cannot find package $pkg"
		fi
		# line: 'URI' FILE SIZE SHA256:HEX
		read -r uri file size sum <<<"$line"
		case "$sum" in SHA256:*) sum=${sum#SHA256:} ;; *) sum="" ;; esac
		if [ -f "$WORK/debs/$file" ] &&
			{ [ -z "$sum" ] || [ "$(sha256sum "$WORK/debs/$file" | cut -d' ' -f1)" = "$sum" ]; }; then
			log "cached: $file"
			break
		fi
		log "downloading: $file ($size bytes)"
		rm -f "$WORK/debs/$file"
		if (cd "$WORK/debs" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >&2) &&
			[ -f "$WORK/debs/$file" ]; then
			break
		fi
		# Stale package lists (the mirror moved on): refresh once and retry.
		[ "$attempt" = 1 ] && { apt_update_once; continue; }
		die "apt-get download $pkg failed ($uri)"
	done
	# Drop cached versions of this package that are no longer the candidate.
	find "$WORK/debs" -maxdepth 1 -name "${pkg}_*.deb" ! -name "$file" -delete
	echo "$WORK/debs/$file"
}

resolve_kernel_pkg() {
	local pkg
	pkg=$(apt-cache depends "$KERNEL_META" 2>/dev/null |
		awk '$1 ~ /Depends:$/ && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
	if [ -z "$pkg" ]; then
		apt_update_once
		pkg=$(apt-cache depends "$KERNEL_META" 2>/dev/null |
			awk '$1 ~ /Depends:$/ && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
	fi
	[ -n "$pkg" ] || die "cannot resolve the versioned kernel package of $KERNEL_META"
	echo "$pkg"
}

# ------------------------------------------------------------------ cleanup
MNT=""
LOOP=""
cleanup() {
	set +e
	if [ -n "$MNT" ] && mountpoint -q "$MNT"; then umount "$MNT"; fi
	if [ -n "$LOOP" ]; then losetup -d "$LOOP" 2>/dev/null; fi
	if [ -n "$MNT" ]; then rmdir "$MNT" 2>/dev/null; fi
	rm -f "${OUT_TMP:-}"
}
trap cleanup EXIT

# ==================================================================== main
ensure_host_tools

KPKG=$(resolve_kernel_pkg)
log "kernel package: $KPKG (from $KERNEL_META)"
KDEB=$(fetch_deb "$KPKG")
BBDEB=$(fetch_deb busybox-static)

BUILD=$WORK/build
# Leftovers of an interrupted run: unmount and detach before deleting.
if [ -d "$BUILD" ]; then
	awk -v b="$BUILD/" 'index($2, b) == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r m; do umount "$m" || umount -l "$m"; done
	losetup -j "$BUILD/disk.raw" 2>/dev/null | cut -d: -f1 |
		while read -r l; do losetup -d "$l" || true; done
fi
rm -rf "$BUILD"
mkdir -p "$BUILD"
KROOT=$BUILD/kernel
ROOT=$BUILD/initramfs
dpkg -x "$KDEB" "$KROOT"
dpkg -x "$BBDEB" "$BUILD/busybox"

KVER=$(ls "$KROOT/lib/modules")
[ "$(echo "$KVER" | wc -w)" = 1 ] || die "expected exactly one kernel in $KDEB, got: $KVER"
VMLINUZ=$KROOT/boot/vmlinuz-$KVER
[ -f "$VMLINUZ" ] || die "no $VMLINUZ in $KDEB"
log "kernel version: $KVER"
# Debian's kernel packages ship no modules.dep (postinst runs depmod): make one.
depmod -b "$KROOT" "$KVER"

# ------------------------------------------------------------- initramfs
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,root,mnt,var/log}
mkdir -p "$ROOT"/{www/cgi-bin,etc/acpi/PWRF,usr/share/udhcpc,etc/udhcpc,lib/modules/"$KVER"}
ln -s ../run "$ROOT/var/run"
chmod 1777 "$ROOT/tmp"
chmod 700 "$ROOT/root"

install -m 0755 "$BUILD/busybox/bin/busybox" "$ROOT/bin/busybox"
# Equivalent of `busybox --install -s`, done at build time (the host must not
# run --install: it would write into the host's own /bin).
while read -r applet; do
	[ "$applet" = bin/busybox ] && continue
	mkdir -p "$ROOT/$(dirname "$applet")"
	ln -sf /bin/busybox "$ROOT/$applet"
done < <("$ROOT/bin/busybox" --list-full)
rm -f "$ROOT/linuxrc"
[ -L "$ROOT/bin/sh" ] || die "busybox has no sh applet?"

# The mini cloud-init (NoCloud / ConfigDrive seeds, /dev/disk/by-id links),
# a static Go program from guestinit/ in this module (see README.md).
GO=$(find_go) || die "no Go toolchain (install golang-go or put go in PATH)"
(cd "$SCRIPT_DIR/guestinit" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 GOFLAGS=-buildvcs=false \
	"$GO" build -trimpath -ldflags='-s -w' -o "$ROOT/sbin/vmpod-cloud-init" .) ||
	die "building guestinit failed"
log "vmpod-cloud-init: $(stat -c %s "$ROOT/sbin/vmpod-cloud-init") bytes"

# --- QEMU guest agent. Debian's qemu-ga is dynamically linked, and the
# initramfs has no libc (busybox is static), so it gets the libraries its ELF
# NEEDED entries name, recursively, plus the dynamic loader. They come from
# the .debs of qemu-guest-agent and of the library packages it depends on
# (apt-cache depends, followed only as far as a NEEDED soname is missing).
QGA_POOL=$BUILD/qga   # each package unpacked in $QGA_POOL/<pkg>
QGA_PKGS=()
LIBDIR=lib/x86_64-linux-gnu
qga_unpack() {
	local deb
	deb=$(fetch_deb "$1" </dev/null)
	dpkg -x "$deb" "$QGA_POOL/$1"
	ln -s "$deb" "$QGA_POOL/$1.deb"
	QGA_PKGS+=("$1")
}
# qga_find NAME: prints the real file (symlinks resolved inside its package)
# of library NAME in the unpacked packages.
qga_find() {
	local p d f t
	for p in "${QGA_PKGS[@]}"; do
		for d in lib/x86_64-linux-gnu usr/lib/x86_64-linux-gnu lib64 usr/lib64 lib usr/lib; do
			f=$QGA_POOL/$p/$d/$1
			[ -e "$f" ] || [ -L "$f" ] || continue
			while [ -L "$f" ]; do
				t=$(readlink "$f")
				case "$t" in /*) f=$QGA_POOL/$p$t ;; *) f=$(dirname "$f")/$t ;; esac
			done
			[ -f "$f" ] && { echo "$f"; return 0; }
		done
	done
	return 1
}
# qga_expand: unpacks the library packages (lib*, zlib*) that the unpacked
# packages depend on; false if there was nothing new.
qga_expand() {
	local p dep new=1
	for p in "${QGA_PKGS[@]}"; do
		while read -r dep; do
			case " ${QGA_PKGS[*]} " in *" $dep "*) continue ;; esac
			qga_unpack "$dep"
			new=0
		done < <(apt-cache depends "$p" 2>/dev/null |
			awk '$1 ~ /^\|?(Pre)?Depends:$/ && $2 ~ /^(lib|zlib)/ { sub(/:.*/, "", $2); print $2 }' | sort -u)
	done
	return $new
}
# qga_add_libs ELF: copies the libraries ELF needs (recursively) to /$LIBDIR.
qga_add_libs() {
	local so f
	for so in $(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
		[ -e "$ROOT/$LIBDIR/$so" ] && continue
		until f=$(qga_find "$so"); do
			qga_expand || die "qemu-ga: no package provides $so (needed by ${1##*/})"
		done
		install -m 0755 "$f" "$ROOT/$LIBDIR/$so"
		qga_add_libs "$ROOT/$LIBDIR/$so"
	done
}
mkdir -p "$QGA_POOL" "$ROOT/$LIBDIR" "$ROOT/lib64" "$ROOT/var/lib"
qga_unpack qemu-guest-agent
install -m 0755 "$QGA_POOL/qemu-guest-agent/usr/sbin/qemu-ga" "$ROOT/usr/sbin/qemu-ga"
QGA_INTERP=$(readelf -l "$ROOT/usr/sbin/qemu-ga" | sed -n 's/.*interpreter: \(.*\)\]$/\1/p')
[ -n "$QGA_INTERP" ] || die "qemu-ga has no program interpreter?"
qga_add_libs "$ROOT/usr/sbin/qemu-ga"
until f=$(qga_find "${QGA_INTERP##*/}"); do
	qga_expand || die "qemu-ga: no package provides its loader $QGA_INTERP"
done
install -m 0755 "$f" "$ROOT/$LIBDIR/${QGA_INTERP##*/}"
[ "$QGA_INTERP" = "/$LIBDIR/${QGA_INTERP##*/}" ] ||
	{ mkdir -p "$ROOT/$(dirname "$QGA_INTERP")"; ln -s "/$LIBDIR/${QGA_INTERP##*/}" "$ROOT$QGA_INTERP"; }
QGA_VERSION=$(dpkg-deb -f "$QGA_POOL/qemu-guest-agent.deb" Version)
log "qemu-ga $QGA_VERSION: $(stat -c %s "$ROOT/usr/sbin/qemu-ga") bytes, from packages: ${QGA_PKGS[*]}"
log "qemu-ga libraries ($(du -cb "$ROOT/$LIBDIR"/* | tail -n1 | cut -f1) bytes): $(cd "$ROOT/$LIBDIR" && echo *)"

# --- script(1) from util-linux (Debian's bsdutils). vmpod runs a TTY exec
# (`crictl exec -it`, `kubectl exec -it`) under `script` so the command gets a
# pseudo-terminal; busybox has no script applet. It needs only libc, which
# qemu-ga brought (qga_add_libs adds anything else it names).
dpkg -x "$(fetch_deb bsdutils </dev/null)" "$BUILD/bsdutils"
install -m 0755 "$BUILD/bsdutils/usr/bin/script" "$ROOT/usr/bin/script"
qga_add_libs "$ROOT/usr/bin/script"
log "script (util-linux $(dpkg-deb -f "$(fetch_deb bsdutils </dev/null)" Version)): $(stat -c %s "$ROOT/usr/bin/script") bytes"

# The kernel opens /dev/console before /init runs and before devtmpfs is mounted.
mknod -m 600 "$ROOT/dev/console" c 5 1
mknod -m 666 "$ROOT/dev/null" c 1 3

# --- kernel modules (with dependencies, in load order)
MODLIST=$BUILD/modules.boot   # load order for /init
ALLMODS=$BUILD/modules.all    # everything copied
: >"$MODLIST"
: >"$ALLMODS"
# strip_signature FILE: drop the appended PKCS#7 signature. The guest kernel
# does not enforce signatures, and verifying them (RSA) is slow under TCG.
strip_signature() {
	local f=$1 magic='~Module signature appended~' size siglen
	[ "$(tail -c 28 "$f" | head -c 27)" = "$magic" ] || return 0
	size=$(stat -c %s "$f")
	# struct module_signature (12 bytes, sig_len big-endian at its end) + magic
	siglen=$(tail -c 32 "$f" | head -c 4 | od -An -tu1 |
		awk '{ print $1 * 16777216 + $2 * 65536 + $3 * 256 + $4 }')
	truncate -s $((size - 28 - 12 - siglen)) "$f"
}
add_module() { # add_module NAME required|optional boot|ondemand
	local name=$1 kind=$2 when=$3 out line path rel
	if ! out=$(modprobe -d "$KROOT" -S "$KVER" --show-depends "$name" 2>/dev/null); then
		[ "$kind" = required ] && die "module $name not found in $KPKG"
		log "module $name: not available in $KVER (skipped)"
		return 0
	fi
	while read -r line; do
		case "$line" in
		builtin\ *) log "module ${line#builtin }: built into the kernel" ;;
		insmod\ *)
			path=${line#insmod }
			path=${path%% *}
			rel=${path#"$KROOT/lib/modules/$KVER/"}
			if ! grep -qxF "$rel" "$ALLMODS"; then
				echo "$rel" >>"$ALLMODS"
				mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$rel")"
				cp "$path" "$ROOT/lib/modules/$KVER/$rel"
				strip_signature "$ROOT/lib/modules/$KVER/$rel"
			fi
			if [ "$when" = boot ] && ! grep -qxF "$rel" "$MODLIST"; then
				echo "$rel" >>"$MODLIST"
			fi
			;;
		esac
	done <<<"$out"
}
for m in "${BOOT_MODULES[@]}"; do add_module "$m" required boot; done
for m in "${BOOT_MODULES_OPTIONAL[@]}"; do add_module "$m" optional boot; done
for m in "${ONDEMAND_MODULES[@]}"; do add_module "$m" optional ondemand; done
install -m 0644 "$MODLIST" "$ROOT/etc/modules.boot"
for f in modules.builtin modules.builtin.modinfo modules.order; do
	cp "$KROOT/lib/modules/$KVER/$f" "$ROOT/lib/modules/$KVER/$f"
done
# modules.dep & co. for the copied subset, so `modprobe` works in the guest too.
depmod -b "$ROOT" "$KVER"
modnames() { sed 's#.*/##; s#\.ko$##' "$1" | tr '\n' ' '; }
log "modules loaded at boot: $(modnames "$MODLIST")"
log "modules on demand: $(grep -vxF -f "$MODLIST" "$ALLMODS" | sed 's#.*/##; s#\.ko$##' | tr '\n' ' ')"

# --- /etc
echo vmpod-test-guest >"$ROOT/etc/hostname"
cat >"$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$ROOT/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
cat >"$ROOT/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
EOF
: >"$ROOT/etc/resolv.conf"
echo /bin/sh >"$ROOT/etc/shells"

cat >"$ROOT/etc/profile" <<'EOF'
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
export HOME=/root
export PS1='# '
export TERM="${TERM:-vt100}"
case "$TERM" in linux|dumb|'') export TERM=vt100 ;; esac
cd "$HOME" 2>/dev/null || cd /
# udhcpc's script starts its late console lines on a fresh line once a shell runs.
: >/run/vmpod-shell-started 2>/dev/null
# Variables from /etc/environment (e.g. written by cloud-init write_files).
if [ -r /etc/environment ]; then set -a; . /etc/environment; set +a; fi
EOF

# busybox init: the shell on the serial console, respawned forever.
# `poweroff`/`reboot`/`halt` (no -f) signal busybox init, which runs the
# shutdown actions, kills everything and powers off / reboots.
cat >"$ROOT/etc/inittab" <<'EOF'
# vmpod test guest: /init does the setup and then execs busybox init.
ttyS0::respawn:/bin/cttyhack /bin/sh -l
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/shutdown.sh
::restart:/sbin/init
EOF
cat >"$ROOT/etc/shutdown.sh" <<'EOF'
#!/bin/sh
# Run by busybox init before it kills all processes and powers off.
echo "vmpod-test-guest shutting down" >/dev/ttyS0 2>/dev/null
killall -q udhcpc httpd acpid 2>/dev/null
sync
EOF
chmod 0755 "$ROOT/etc/shutdown.sh"

# /sbin/shutdown for qemu-ga's guest-shutdown (virsh shutdown --mode=agent),
# which runs `/sbin/shutdown -P|-H|-r +0 MESSAGE`; busybox has no shutdown.
cat >"$ROOT/sbin/shutdown" <<'EOF'
#!/bin/sh
# Minimal shutdown(8): -P/-h power off, -H halt, -r reboot; time and message ignored.
action=poweroff
for a in "$@"; do
	case "$a" in
	-r) action=reboot ;;
	-H) action=halt ;;
	-P|-h) action=poweroff ;;
	esac
done
exec /sbin/$action
EOF
chmod 0755 "$ROOT/sbin/shutdown"

# pgrep for exec checks (critest's "timeout exec process should be gone"
# runs `sh -c 'pgrep sleep || true'`); busybox-static has no pgrep applet.
# Only the form pgrep PATTERN: the pids of processes whose name matches the
# extended regular expression, exit 1 when there is none.
cat >"$ROOT/usr/bin/pgrep" <<'EOF'
#!/bin/sh
# Minimal pgrep(1) of the vmpod test guest: pgrep PATTERN.
[ $# -eq 1 ] || { echo "usage: pgrep PATTERN (this guest's pgrep takes no options)" >&2; exit 2; }
rc=1
for d in /proc/[0-9]*; do
	{ read -r name <"$d/comm"; } 2>/dev/null || continue
	if printf '%s\n' "$name" | grep -Eq -- "$1"; then
		echo "${d#/proc/}"
		rc=0
	fi
done
exit "$rc"
EOF
chmod 0755 "$ROOT/usr/bin/pgrep"

# mountpoint -q DIR for vmpod's share check (a runcmd that reports a share
# the guest could not mount); busybox-static has no mountpoint applet, and
# without one every share would be reported as not mounted. Only the form
# mountpoint [-q] DIR: exit 0 when DIR is a mount point (in /proc/mounts,
# whose paths escape a space as \040).
cat >"$ROOT/usr/bin/mountpoint" <<'EOF'
#!/bin/sh
# Minimal mountpoint(1) of the vmpod test guest: mountpoint [-q] DIR.
quiet=
[ "$1" = -q ] && { quiet=1; shift; }
[ $# -eq 1 ] || { echo "usage: mountpoint [-q] DIR" >&2; exit 2; }
dir=$(printf '%s' "$1" | sed 's/ /\\040/g')
while read -r _ mnt _; do
	if [ "$mnt" = "$dir" ]; then
		[ -n "$quiet" ] || echo "$1 is a mountpoint"
		exit 0
	fi
done </proc/mounts
[ -n "$quiet" ] || echo "$1 is not a mountpoint"
exit 1
EOF
chmod 0755 "$ROOT/usr/bin/mountpoint"

# acpid: the power button (virsh shutdown / QEMU system_powerdown) maps to the
# event "PWRF" -> action file /etc/acpi/PWRF/00000080.
cat >"$ROOT/etc/acpid.conf" <<'EOF'
PWRF PWRF/00000080
PWRB PWRF/00000080
EOF
cat >"$ROOT/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "vmpod-test-guest acpi power button" >/dev/ttyS0 2>/dev/null
exec /sbin/poweroff
EOF
chmod 0755 "$ROOT/etc/acpi/PWRF/00000080"

# --- vmpod's hook after a restore into a new pod (docs/snapshots.md):
# the interface has its new MAC; restart its DHCP client (udhcpc read the
# old MAC when it started), as the init starts it.
mkdir -p "$ROOT/etc/vmpod"
cat >"$ROOT/etc/vmpod/network-changed" <<'EOF'
#!/bin/sh
dev=$1
for p in /proc/[0-9]*; do
	case "$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" in
	"udhcpc -f -i $dev "*) kill "${p##*/}" 2>/dev/null ;;
	esac
done
udhcpc -f -i "$dev" -s /usr/share/udhcpc/default.script \
	-t 5 -T 1 -A 3 -O search -O staticroutes \
	</dev/null >"/var/log/udhcpc.$dev.log" 2>&1 &
EOF
chmod 0755 "$ROOT/etc/vmpod/network-changed"

# --- udhcpc event script
cat >"$ROOT/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
# udhcpc event script of the vmpod test guest.
# udhcpc passes: $1 = deconfig|bound|renew|leasefail|nak, and $interface,
# $ip, $mask (prefix length), $broadcast, $router, $dns, $domain, $search,
# $hostname, $staticroutes, $mtu in the environment.
# shellcheck disable=SC2154,SC2086
PATH=/sbin:/usr/sbin:/bin:/usr/bin
STATE=/run/udhcpc
RESOLV=/run/resolv
mkdir -p "$STATE" "$RESOLV"

say() {
	# Once the serial shell runs (its prompt has no newline), start on a new line.
	if [ -e /run/vmpod-shell-started ]; then
		printf '\r\n%s\n' "$*" >/dev/ttyS0 2>/dev/null
	else
		printf '%s\n' "$*" >/dev/ttyS0 2>/dev/null
	fi
}

update_resolv() {
	cat "$RESOLV"/* >/etc/resolv.conf.new 2>/dev/null
	mv -f /etc/resolv.conf.new /etc/resolv.conf
}

set_routes() {
	metric=$(( 100 + $(cat /sys/class/net/"$interface"/ifindex 2>/dev/null || echo 0) ))
	if [ -n "$staticroutes" ]; then
		# "dest/prefix gateway dest/prefix gateway ..."
		set -- $staticroutes
		while [ $# -ge 2 ]; do
			ip -4 route replace "$1" via "$2" dev "$interface" metric "$metric" 2>/dev/null ||
				ip -4 route replace "$1" via "$2" dev "$interface" metric "$metric" onlink
			shift 2
		done
	elif [ -n "$router" ]; then
		for r in $router; do
			ip -4 route replace default via "$r" dev "$interface" metric "$metric" 2>/dev/null ||
				ip -4 route replace default via "$r" dev "$interface" metric "$metric" onlink
			break
		done
	fi
}

set_dns() {
	{
		s="${search:-$domain}"
		[ -n "$s" ] && echo "search $s"
		for n in $dns; do echo "nameserver $n"; done
	} >"$RESOLV/$interface"
	update_resolv
}

case "$1" in
deconfig)
	ip -4 addr flush dev "$interface" 2>/dev/null
	ip link set dev "$interface" up
	rm -f "$RESOLV/$interface" "$STATE/$interface.ip"
	update_resolv
	;;
bound|renew)
	old=$(cat "$STATE/$interface.ip" 2>/dev/null)
	new="$ip/${mask:-32}"
	[ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu" 2>/dev/null
	if [ "$1" = bound ] || [ "$old" != "$new" ]; then
		ip -4 addr flush dev "$interface"
		ip -4 addr add "$new" ${broadcast:+broadcast "$broadcast"} dev "$interface"
	fi
	set_routes
	set_dns
	if [ -n "$hostname" ] && [ "$hostname" != "$(hostname)" ]; then
		hostname "$hostname"
		echo "$hostname" >/etc/hostname
		{ grep -v '^127\.0\.1\.1' /etc/hosts; printf '127.0.1.1\t%s\n' "$hostname"; } >/etc/hosts.new
		mv -f /etc/hosts.new /etc/hosts
		say "vmpod-test-guest hostname=$hostname"
	fi
	echo "$new" >"$STATE/$interface.ip"
	if [ "$old" != "$new" ]; then
		say "vmpod-test-guest ip $interface=$new"
	fi
	;;
leasefail|nak)
	;;
esac
exit 0
EOF
chmod 0755 "$ROOT/usr/share/udhcpc/default.script"
ln -s /usr/share/udhcpc/default.script "$ROOT/etc/udhcpc/default.script"

# --- web root
cat >"$ROOT/www/index.html" <<'EOF'
<!DOCTYPE html>
<html><head><title>vmpod-test-guest</title></head>
<body>vmpod-test-guest</body></html>
EOF
cat >"$ROOT/www/cgi-bin/info" <<'EOF'
#!/bin/sh
# GET /cgi-bin/info: plain-text facts about this guest.
printf 'Content-Type: text/plain\r\n\r\n'
echo "vmpod-test-guest"
echo "hostname=$(hostname)"
echo "cpus=$(grep -c '^processor' /proc/cpuinfo)"
echo "mem_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
for f in /run/udhcpc/*.ip; do
	[ -e "$f" ] || continue
	n=${f##*/}
	echo "ip ${n%.ip}=$(cat "$f")"
done
EOF
chmod 0755 "$ROOT/www/cgi-bin/info"

# --- /init
cat >"$ROOT/init" <<'EOF'
#!/bin/sh
# /init of the vmpod test guest (busybox initramfs). Sets everything up, prints
# the readiness lines on ttyS0, then execs busybox init (serial shell, poweroff).
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
umask 022

mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=000 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
exec </dev/console >/dev/console 2>&1

TTY=/dev/ttyS0
say() { echo "$*" >"$TTY"; }

# Kernel modules, in dependency order (see /etc/modules.boot).
# scsi_mod scan=sync: SCSI devices (the cloud-init seed CD-ROM) exist once
# virtio_scsi is loaded, so vmpod-cloud-init knows at once if there is none.
kver=$(uname -r)
while read -r m; do
	args=
	case "$m" in */scsi_mod.ko) args=scan=sync ;; esac
	# shellcheck disable=SC2086
	insmod "/lib/modules/$kver/$m" $args 2>/dev/null ||
		echo "init: insmod $m failed"
done </etc/modules.boot

# Hostname: fw_cfg opt/vmpod/hostname, else vmpod.hostname= on the kernel
# command line, else /etc/hostname. DHCP (option 12) may change it later.
name=$(cat /etc/hostname)
# shellcheck disable=SC2013
for arg in $(cat /proc/cmdline); do
	case "$arg" in vmpod.hostname=?*) name=${arg#vmpod.hostname=} ;; esac
done
fwcfg=/sys/firmware/qemu_fw_cfg/by_name/opt/vmpod/hostname/raw
if [ -r "$fwcfg" ]; then
	n=$(cat "$fwcfg")
	[ -n "$n" ] && name=$n
fi
hostname "$name"
echo "$name" >/etc/hostname
printf '127.0.1.1\t%s\n' "$name" >>/etc/hosts

# Network: lo, then DHCP in the background on every ethernet interface.
ip link set dev lo up
for d in /sys/class/net/*; do
	n=${d##*/}
	case "$n" in
	eth*|en*)
		ip link set dev "$n" up
		udhcpc -f -i "$n" -s /usr/share/udhcpc/default.script \
			-t 5 -T 1 -A 3 -O search -O staticroutes \
			</dev/null >"/var/log/udhcpc.$n.log" 2>&1 &
		;;
	esac
done

httpd -p 8080 -h /www
acpid -c /etc/acpi -a /etc/acpid.conf -l /var/log/acpid.log

# Mini cloud-init: /dev/disk/by-id/virtio-<serial> links, then a NoCloud
# ("cidata") or ConfigDrive ("config-2") seed if one is attached: hostname,
# bootcmd, write_files, mounts, ssh keys (the init stage), then scripts and
# runcmd (the final stage). It prints "vmpod-test-guest cloud-init
# none|datasource=...|done|error: ...". qemu-ga (below) starts once the init
# stage is over, beside the final stage, as a real guest's systemd starts it
# beside cloud-init: a runcmd that runs for ever (a container's command)
# does not keep exec out, and a bootcmd can still take the agent away.
/sbin/vmpod-cloud-init </dev/null &
ci_pid=$!
while [ ! -e /run/vmpod-cloud-init.init-done ] && kill -0 "$ci_pid" 2>/dev/null; do
	sleep 0.05
done

# QEMU guest agent, if the host gave us the virtio-serial port
# org.qemu.guest_agent.0. There is no udev: make the /dev/virtio-ports/NAME
# links it would make (-> /dev/vportNpM). The host announces its ports (and
# their names) asynchronously once virtio_console is loaded: if a
# virtio-serial device exists but has no port yet, wait up to 5 s for them
# (a device without ports costs that much).
vport_links() {
	for p in /sys/class/virtio-ports/vport*; do
		[ -r "$p/name" ] || continue
		n=$(cat "$p/name")
		[ -n "$n" ] && [ -e "/dev/${p##*/}" ] || continue
		mkdir -p /dev/virtio-ports
		ln -sfn "../${p##*/}" "/dev/virtio-ports/$n"
	done
}
has_vport() {
	for p in /sys/class/virtio-ports/vport*; do [ -e "$p" ] && return 0; done
	return 1
}
qga_port=/dev/virtio-ports/org.qemu.guest_agent.0
vport_links
if [ ! -e "$qga_port" ] && [ -n "$(ls /sys/bus/virtio/drivers/virtio_console 2>/dev/null | grep '^virtio')" ]; then
	i=0
	while ! has_vport && [ "$i" -lt 100 ]; do
		sleep 0.05
		i=$((i + 1))
	done
	vport_links
fi
if [ -e "$qga_port" ]; then
	# -d: daemonize (pid file /run/qemu-ga.pid). guest-exec runs programs
	# with this PATH (busybox applets).
	if qemu-ga -m virtio-serial -p "$qga_port" -d -l /var/log/qemu-ga.log </dev/null >/dev/null 2>&1; then
		say "vmpod-test-guest qemu-ga started"
	else
		say "vmpod-test-guest qemu-ga failed"
	fi
else
	say "vmpod-test-guest qemu-ga none"
fi

# The ready lines come once cloud-init is done.
wait "$ci_pid"
# From now on, hotplugged virtio disks get their by-id links too.
/sbin/vmpod-cloud-init watch </dev/null >/dev/null 2>&1 &

# Keep ttyS0 open from now on so that input typed right after the ready line
# is buffered for the shell (the 8250 resets its FIFO when first opened).
# (Checked in a subshell first: a failing exec redirection would end PID 1.)
if (exec 3<>"$TTY") 2>/dev/null; then exec 3<>"$TTY"; fi
cpus=$(grep -c '^processor' /proc/cpuinfo)
mem=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
# Empty line first: firmware may have left escape codes (SeaBIOS sercon's
# clear screen) without a newline on the console.
say ""
say "vmpod-test-guest ready"
say "vmpod-test-guest cpus=$cpus"
say "vmpod-test-guest mem_kb=$mem"
say "vmpod-test-guest hostname=$(hostname)"

exec /sbin/init
EOF
chmod 0755 "$ROOT/init"

INITRD=$BUILD/initrd.img
(cd "$ROOT" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9 -n >"$INITRD"
log "initramfs: $(stat -c %s "$INITRD") bytes"

# -------------------------------------------------------------- disk image
MIB=$((1024 * 1024))
payload=$(($(stat -c %s "$VMLINUZ") + $(stat -c %s "$INITRD")))
PART_MB=$(((payload + MIB - 1) / MIB + 6))
DISK_MB=$((PART_MB + 1))
RAW=$BUILD/disk.raw
truncate -s "${DISK_MB}M" "$RAW"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q --no-reread --no-tell-kernel "$RAW" >&2
dd if="$(find_mbr_bin)" of="$RAW" bs=440 count=1 conv=notrunc status=none

LOOP=$(losetup --find --show --offset $MIB --sizelimit $((PART_MB * MIB)) "$RAW")
mkfs.ext2 -q -F -L vmpod-boot -m 0 -N 64 "$LOOP"
MNT=$(mktemp -d "$BUILD/mnt.XXXXXX")
mount -t ext2 "$LOOP" "$MNT"
mkdir -p "$MNT/boot/extlinux"
cp "$VMLINUZ" "$MNT/boot/vmlinuz"
cp "$INITRD" "$MNT/boot/initrd.img"
cat >"$MNT/boot/extlinux/extlinux.conf" <<EOF
# vmpod test guest ($KPKG, $KVER)
DEFAULT vmpod
PROMPT 0
NOESCAPE 1
TIMEOUT 1
TOTALTIMEOUT 1
LABEL vmpod
	LINUX /boot/vmlinuz
	INITRD /boot/initrd.img
	APPEND $KERNEL_CMDLINE
EOF
# (extlinux warns that a loop device has no geometry: harmless, the MBR
# passes the partition offset to the boot sector at boot time)
extlinux --install "$MNT/boot/extlinux" 2>&1 | grep -v -e 'is device /dev/loop' \
	-e 'unable to obtain device geometry' -e 'usually harmless' >&2 || true
[ -f "$MNT/boot/extlinux/ldlinux.sys" ] || die "extlinux --install failed"
sync
umount "$MNT"
rmdir "$MNT"
MNT=""
losetup -d "$LOOP"
LOOP=""

mkdir -p "$(dirname "$OUT")"
OUT_TMP="$OUT.tmp.$$"
qemu-img convert -c -O qcow2 "$RAW" "$OUT_TMP"
mv -f "$OUT_TMP" "$OUT"
OUT_TMP=""
# Keep the work dir small: only the .deb cache, the initramfs tree, initrd.img
# and vmlinuz (for direct kernel boot while debugging) stay.
cp "$VMLINUZ" "$BUILD/vmlinuz"
rm -rf "$RAW" "$KROOT" "$BUILD/busybox" "$BUILD/bsdutils" "$QGA_POOL"

size=$(stat -c %s "$OUT")
log "built $OUT"
log "size: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }') MiB), virtual ${DISK_MB} MiB, kernel $KVER"
echo "$OUT"
