#!/usr/bin/env bash
# Build the Debian guest image: a Debian 12 (bookworm) root file system made from
# Debian's packages by mmdebstrap, with systemd, udev, a kernel, an ordinary user and
# the guest agent installed by dpkg from the .deb that `make guestd-deb` builds.
#
#   bash tools/debian-image/build.sh GUESTD_DEB OUT_DIR
#
# Produces, in OUT_DIR:
#   disk.img     raw ext4 root file system (made by `mke2fs -d`, no loop mount), sparse
#   vmlinuz      the image's own kernel, initrd.img its initramfs (direct kernel boot)
#   image.json   the file names, the kernel command line, the build's figures
#   inputs.sha256  hash of the inputs (this folder's files, the .deb, the settings)
# Nothing is rebuilt while inputs.sha256 matches; FORCE=1 rebuilds anyway.
#
# The files under overlay/ are copied into the root as they are: DHCP on every
# ethernet interface (systemd-networkd), the ordinary user logged in on the serial
# console, the journal kept on the disk, and a unit for the tests that runs the
# commands a test sends only when the kernel command line names where the test
# listens (virtplane-test-control.service).
#
# For the tests too, $TEST_DIR in the image holds two packages to install by
# dpkg: a small one made here by dpkg-deb (virtplane-test-hello, a file and
# no dependencies) and a copy of the agent's own .deb (to install it again
# after a test removed it).
#
# Environment: SUITE (bookworm), MIRROR (http://deb.debian.org/debian),
#   DISK_SIZE (2G), GUEST_HOSTNAME (virtplane-debian).
set -euo pipefail
umask 022
export LC_ALL=C

log() { printf 'debian-image: %s\n' "$*" >&2; }
die() {
	printf 'debian-image: ERROR: %s\n' "$*" >&2
	exit 1
}

[ $# -eq 2 ] || die "usage: bash tools/debian-image/build.sh GUESTD_DEB OUT_DIR"
[ -f "$1" ] || die "no agent package at $1 (make guestd-deb builds it)"
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEB=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
mkdir -p "$2"
OUT=$(cd "$2" && pwd)
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
DISK_SIZE=${DISK_SIZE:-2G}
GUEST_USER=virtplane # overlay/etc/systemd/system/serial-getty@ttyS0.service.d logs it in
GUEST_HOSTNAME=${GUEST_HOSTNAME:-virtplane-debian}
CMDLINE="root=/dev/vda rw console=ttyS0"
TEST_DIR=/usr/local/share/virtplane-test
TEST_PACKAGE=virtplane-test-hello
TEST_PACKAGE_VERSION=1.0

PACKAGES=$(grep -v '^#' "$SCRIPT_DIR/packages.txt" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
INPUTS=$( {
	(cd "$SCRIPT_DIR" && find . -type f -printf '%m %p\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum)
	sha256sum "$DEB" | cut -d' ' -f1
	printf '%s\n' "$SUITE" "$MIRROR" "$DISK_SIZE" "$GUEST_HOSTNAME" "$CMDLINE" "$TEST_DIR"
} | sha256sum | cut -d' ' -f1)

if [ "${FORCE:-0}" != 1 ] && [ -f "$OUT/inputs.sha256" ] &&
	[ "$(cat "$OUT/inputs.sha256")" = "$INPUTS" ] &&
	[ -f "$OUT/disk.img" ] && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.img" ]; then
	log "up to date in $OUT"
	exit 0
fi

command -v mmdebstrap >/dev/null || {
	log "installing mmdebstrap"
	apt-get install -y -q mmdebstrap >/dev/null || die "cannot install mmdebstrap"
}
command -v mke2fs >/dev/null || die "mke2fs (e2fsprogs) is missing"
[ "$(id -u)" = 0 ] || die "run as root: mmdebstrap builds into a directory owned by root"

START=$(date +%s.%N)
rm -f "$OUT/inputs.sha256" "$OUT/disk.img" "$OUT/vmlinuz" "$OUT/initrd.img" "$OUT/image.json"
ROOT=$OUT/rootfs
# --one-file-system: never into a /proc or /dev that a failed run left mounted.
rm -rf --one-file-system "$ROOT"
WORK=$OUT/work
rm -rf "$WORK"
trap 'rm -rf --one-file-system "$ROOT" "$WORK"' EXIT

# The test package: one file, no dependencies, no maintainer scripts.
TEST_DEB_NAME=${TEST_PACKAGE}_${TEST_PACKAGE_VERSION}_all.deb
mkdir -p "$WORK/pkg/DEBIAN" "$WORK/pkg/usr/share/doc/$TEST_PACKAGE"
cat >"$WORK/pkg/DEBIAN/control" <<CONTROL
Package: $TEST_PACKAGE
Version: $TEST_PACKAGE_VERSION
Architecture: all
Maintainer: virtplane <virtplane@localhost>
Section: misc
Priority: optional
Description: virtplane's tests: a package to install in the Debian guest
 Installed by the tests to see the guest agent report the change.
CONTROL
echo "Installed by virtplane's tests." >"$WORK/pkg/usr/share/doc/$TEST_PACKAGE/README"
dpkg-deb --root-owner-group --build "$WORK/pkg" "$WORK/$TEST_DEB_NAME" >/dev/null

DEB_NAME=$(basename "$DEB")
# mmdebstrap mounts /dev, /proc and /sys inside the root while it works. Once
# (a first build on a development machine) a tmpfs was left over the host's
# own /dev/shm, hiding PostgreSQL's shared memory from it: fail loudly if the
# host's mounts of /dev/shm are not the same after the build.
shm_mounts() { grep -c ' /dev/shm ' /proc/self/mountinfo || true; }
SHM_BEFORE=$(shm_mounts)
log "mmdebstrap $SUITE minbase + $PACKAGES, then $DEB_NAME by dpkg"
# The hooks run outside the root with "$1" the root's path: the agent's .deb is
# uploaded and installed by dpkg as an image builder would; systemd-firstboot is
# masked so that the first boot never waits for answers on the console; the
# overlay's files are copied in and its units enabled.
mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
	--customize-hook="upload '$DEB' /tmp/$DEB_NAME" \
	--customize-hook="chroot \"\$1\" dpkg -i /tmp/$DEB_NAME" \
	--customize-hook="rm -f \"\$1/tmp/$DEB_NAME\"" \
	--customize-hook="chroot \"\$1\" useradd --create-home --shell /bin/bash '$GUEST_USER'" \
	--customize-hook="echo '$GUEST_USER:$GUEST_USER' | chroot \"\$1\" chpasswd" \
	--customize-hook="chroot \"\$1\" passwd --delete root" \
	--customize-hook="chroot \"\$1\" systemctl mask systemd-firstboot.service" \
	--customize-hook="sync-in '$SCRIPT_DIR/overlay' /" \
	--customize-hook="chroot \"\$1\" systemctl enable systemd-networkd.service virtplane-test-control.service" \
	--customize-hook="mkdir -p \"\$1$TEST_DIR\"" \
	--customize-hook="upload '$WORK/$TEST_DEB_NAME' '$TEST_DIR/$TEST_DEB_NAME'" \
	--customize-hook="upload '$DEB' '$TEST_DIR/$DEB_NAME'" \
	--customize-hook="echo '$GUEST_HOSTNAME' > \"\$1/etc/hostname\"" \
	--customize-hook="printf '127.0.0.1 localhost\n127.0.1.1 $GUEST_HOSTNAME\n' > \"\$1/etc/hosts\"" \
	--customize-hook="echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > \"\$1/etc/fstab\"" \
	"$SUITE" "$ROOT" "$MIRROR"
ROOTFS_DONE=$(date +%s.%N)
[ "$(shm_mounts)" = "$SHM_BEFORE" ] ||
	die "mmdebstrap left a mount over the host's /dev/shm (see /proc/self/mountinfo); 'umount /dev/shm' once, then restart PostgreSQL"

dpkg --root="$ROOT" -s virtplane-guestd >/dev/null || die "virtplane-guestd is not installed in the image"
KERNEL=$(find "$ROOT/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | tail -n 1)
INITRD=$(find "$ROOT/boot" -maxdepth 1 -name 'initrd.img-*' | sort | tail -n 1)
[ -n "$KERNEL" ] && [ -n "$INITRD" ] || die "no kernel or initrd under $ROOT/boot"
install -m 0644 "$KERNEL" "$OUT/vmlinuz"
install -m 0644 "$INITRD" "$OUT/initrd.img"
APPLICATIONS=$(dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f='${db:Status-Status}\n' | grep -c '^installed$')
ROOT_MB=$(du -smx "$ROOT" | cut -f1)

log "mke2fs -t ext4 -d (disk of $DISK_SIZE, ${ROOT_MB} MB used)"
mke2fs -q -t ext4 -L root -d "$ROOT" "$OUT/disk.img.new" "$DISK_SIZE"
mv "$OUT/disk.img.new" "$OUT/disk.img"
END=$(date +%s.%N)

cat >"$OUT/image.json" <<JSON
{
  "suite": "$SUITE",
  "disk": "disk.img",
  "disk_format": "raw",
  "kernel": "vmlinuz",
  "initrd": "initrd.img",
  "kernel_release": "$(basename "$KERNEL" | sed 's/^vmlinuz-//')",
  "cmdline": "$CMDLINE",
  "user": "$GUEST_USER",
  "hostname": "$GUEST_HOSTNAME",
  "applications": $APPLICATIONS,
  "test_package": "$TEST_PACKAGE",
  "test_package_deb": "$TEST_DIR/$TEST_DEB_NAME",
  "agent_deb": "$TEST_DIR/$DEB_NAME",
  "rootfs_mb": $ROOT_MB,
  "rootfs_s": $(printf '%.1f' "$(echo "$ROOTFS_DONE - $START" | bc)"),
  "build_s": $(printf '%.1f' "$(echo "$END - $START" | bc)")
}
JSON
echo "$INPUTS" >"$OUT/inputs.sha256"
log "built in $OUT: $APPLICATIONS packages, $(cat "$OUT/image.json" | grep build_s)"
