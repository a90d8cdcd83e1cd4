#!/usr/bin/env bash
# Builds a bigger twinvm guest: a Debian bookworm i386 root file system (debootstrap,
# minbase plus the packages you name) in an ext4 image, booted by the default guest's
# kernel and initramfs with `--kernel-args twinvm.root=/dev/vda`. See README.md here.
#
#   sudo images/debian-rootfs/build-rootfs.sh OUT.img [SIZE] [PACKAGE...]
#     SIZE     image size for mkfs.ext4 (default 1G); the files take ~200 MB for minbase
#     PACKAGE  extra Debian packages (e.g. python3 postgresql); their dependencies come too
#
# Run as root on Debian (amd64 hosts run the i386 maintainer scripts natively), with
# the Debian archive reachable (DEBIAN_MIRROR, default http://deb.debian.org/debian).
# Needs debootstrap and e2fsprogs 1.43+ (mkfs.ext4 -d): installed with apt-get if missing.
set -euo pipefail

OUT="${1:?usage: $0 OUT.img [SIZE] [PACKAGE...]}"
SIZE="${2:-1G}"
shift $(( $# >= 2 ? 2 : 1 ))
EXTRA=("$@")
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
READY_MARKER=TWINVM-READY
# What every twinvm guest uses: a shell, e2fsprogs for its disks, procps for ps.
BASE_PACKAGES=(bash coreutils e2fsprogs procps util-linux)

die() { echo "build-rootfs.sh: ERROR: $*" >&2; exit 1; }
info() { echo "build-rootfs.sh: $*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and the chroot need it)"
[ ! -e "$OUT" ] || die "$OUT exists; refusing to overwrite it"
command -v debootstrap >/dev/null && command -v mkfs.ext4 >/dev/null || {
  info "installing debootstrap and e2fsprogs"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap e2fsprogs >/dev/null
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/root"
packages="$(IFS=,; echo "${BASE_PACKAGES[*]}${EXTRA[*]:+,${EXTRA[*]}}" | tr ' ' ',')"
info "debootstrap $SUITE i386 (minbase + $packages) from $MIRROR"
debootstrap --arch=i386 --variant=minbase --include="$packages" "$SUITE" "$ROOT" "$MIRROR" >&2

# The guest's PID 1: the default guest's /init mounted this disk, moved /dev here and
# switch_root'ed to this script. Like the initramfs guest it runs an overlay's start-up
# command, prints the ready marker once, then a root shell on ttyS0, respawned.
cat > "$ROOT/sbin/twinvm-init" <<INIT
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
mount -o remount,rw /
hostname twinvm
exec </dev/ttyS0 >/dev/ttyS0 2>&1
if [ -x /etc/twinvm/startup ]; then
  /etc/twinvm/startup </dev/null >/var/log/twinvm-startup.log 2>&1
  echo \$? > /var/log/twinvm-startup.status
fi
echo $READY_MARKER
while true; do
  setsid -c /bin/bash --login
done
INIT
chmod 755 "$ROOT/sbin/twinvm-init"
# bash as the console shell: the prompt twinvm expects, no bracketed-paste escapes.
cat > "$ROOT/root/.bashrc" <<'RC'
PS1='# '
bind 'set enable-bracketed-paste off' 2>/dev/null
RC
printf '/dev/vda / ext4 rw,relatime 0 1\n' > "$ROOT/etc/fstab"
echo twinvm > "$ROOT/etc/hostname"
# Not needed in the image: package lists and the .deb cache.
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*

info "making $OUT ($SIZE, ext4) from the tree ($(du -sh "$ROOT" | cut -f1))"
mkfs.ext4 -q -F -L twinvm-root -d "$ROOT" "$OUT" "$SIZE"
info "done: twinvm pair --disk $OUT --kernel-args twinvm.root=/dev/vda"
