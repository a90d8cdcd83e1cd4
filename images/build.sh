#!/usr/bin/env bash
# Rebuild the default twinvm guest image (images/bios.bin, images/vmlinuz,
# images/initramfs.cpio.gz, images/manifest.json, images/licenses/) from Debian
# bookworm packages only. Run as root on Debian bookworm (amd64 or i386 host).
#
#   sudo images/build.sh
#
# Work folder: images/.build/ (gitignored; downloaded .debs are kept there as a cache).
# Output is deterministic for the same pinned versions and the same host toolchain
# (timestamps come from SOURCE_DATE_EPOCH, file order is sorted, owner is root).
set -euo pipefail

# ---------------------------------------------------------------------------
# Pinned versions. To move to newer ones: `apt-cache policy <pkg>` (and for the
# kernel `apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-686$'`),
# update the lines below, rerun, and review the diff of manifest.json.
# ---------------------------------------------------------------------------
SEABIOS_VERSION='1.16.2-1'
KERNEL_ABI='6.1.0-50'            # linux-image-${KERNEL_ABI}-${KERNEL_FLAVOUR}
KERNEL_FLAVOUR='686'
KERNEL_VERSION='6.1.176-1'
BUSYBOX_VERSION='1:1.35.0-4+deb12u1+b1'
FIO_VERSION='3.33-3'
LIBC6_VERSION='2.36-9+deb12u14'
LIBAIO1_VERSION='0.3.113-4'
ZLIB1G_VERSION='1:1.2.13.dfsg-1'
LIBNUMA1_VERSION='2.0.16-1'
E2FSPROGS_VERSION='1.47.0-2+b2'   # also libext2fs2, libcom-err2, libss2 (same source)
UTIL_LINUX_LIBS_VERSION='2.38.1-5+deb12u3'   # libblkid1, libuuid1
# Host build tools (amd64), installed with apt-get if missing or at another version.
GCC_MULTILIB_VERSION='4:12.2.0-3'
CPIO_VERSION='2.13+dfsg-7.1'

# Packages whose files end up in the image (name:arch=version).
KERNEL_PKG="linux-image-${KERNEL_ABI}-${KERNEL_FLAVOUR}"
KREL="${KERNEL_ABI}-${KERNEL_FLAVOUR}"
GUEST_PACKAGES=(
  "seabios:all=${SEABIOS_VERSION}"
  "${KERNEL_PKG}:i386=${KERNEL_VERSION}"
  "busybox-static:i386=${BUSYBOX_VERSION}"
  "fio:i386=${FIO_VERSION}"
  "libc6:i386=${LIBC6_VERSION}"
  "libaio1:i386=${LIBAIO1_VERSION}"
  "zlib1g:i386=${ZLIB1G_VERSION}"
  "libnuma1:i386=${LIBNUMA1_VERSION}"
  "e2fsprogs:i386=${E2FSPROGS_VERSION}"
  "libext2fs2:i386=${E2FSPROGS_VERSION}"
  "libcom-err2:i386=${E2FSPROGS_VERSION}"
  "libss2:i386=${E2FSPROGS_VERSION}"
  "libblkid1:i386=${UTIL_LINUX_LIBS_VERSION}"
  "libuuid1:i386=${UTIL_LINUX_LIBS_VERSION}"
)
HOST_PACKAGES=(
  "gcc-multilib=${GCC_MULTILIB_VERSION}"
  "cpio=${CPIO_VERSION}"
)

# Kernel modules to load at boot, in this order; their `depends=` (from each .ko's
# .modinfo) are added automatically in front of them. crc32c_generic is listed
# explicitly because jbd2/ext4 only ask for it through the crypto API (softdep
# "pre: crypto-crc32c"), so it goes before them. virtio_net drives v86's virtio-net NIC
# (eth0); it brings net_failover and failover.
MODULES=(virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
         virtio_blk virtio_net crc16 mbcache crc32c_generic jbd2 ext4)

# fio links the engines below into its binary. Their real libraries (and what they
# pull in) are ~75 MB, too much for a 128 MiB guest's initramfs, so they are replaced
# by stub libraries with the same soname and symbol versions, whose functions print
# a message and exit(1). The stubbed symbol lists are derived from fio's dynamic
# symbol table; unversioned symbols are assigned by these name prefixes.
STUB_SONAMES=(libgfapi.so.0 libnbd.so.0 libibverbs.so.1 librdmacm.so.1 librados.so.2 librbd.so.1)
declare -A STUB_PREFIX=(
  [glfs_]=libgfapi.so.0 [nbd_]=libnbd.so.0 [ibv_]=libibverbs.so.1
  [rdma_]=librdmacm.so.1 [rados_]=librados.so.2 [rbd_]=librbd.so.1
)

# e2fsprogs programs shipped (from e2fsprogs' /sbin), and the names that link to them.
E2FS_PROGRAMS=(mke2fs e2fsck tune2fs resize2fs dumpe2fs debugfs)
declare -A E2FS_LINKS=(
  [mkfs.ext2]=mke2fs [mkfs.ext3]=mke2fs [mkfs.ext4]=mke2fs
  [fsck.ext2]=e2fsck [fsck.ext3]=e2fsck [fsck.ext4]=e2fsck [e2label]=tune2fs
)

# The guest's network (eth0), unless the kernel command line says otherwise
# (twinvm.ip=ADDR/PREFIX, twinvm.gw=ADDR or empty for no default route).
GUEST_IP='10.0.2.15/24'
GUEST_GW='10.0.2.2'
GUEST_MTU=1500
CMDLINE='console=ttyS0 tsc=reliable mitigations=off quiet cryptomgr.notests noisapnp initcall_blacklist=init_kprobe_trace,crypto_kdf108_init,load_system_certificate_list'
READY_MARKER='TWINVM-READY'
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1700000000}"   # 2023-11-14T22:13:20Z
export SOURCE_DATE_EPOCH LC_ALL=C TZ=UTC
umask 022

# ---------------------------------------------------------------------------
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$HERE"
WORK="$HERE/.build"
DEBS="$WORK/debs"
PKGS="$WORK/pkgs"
STAGE="$WORK/initramfs"
STUBS="$WORK/stubs"

die()  { echo "build.sh: ERROR: $*" >&2; exit 1; }
info() { echo "build.sh: $*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get, dpkg --add-architecture and mknod need it)"
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "needs a Debian host (apt-get, dpkg-deb)"
grep -q 'VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null \
  || info "warning: host is not Debian bookworm; pinned versions may not resolve"

# --- apt setup ---------------------------------------------------------------
if ! grep -qx i386 <<<"$(dpkg --print-foreign-architectures)" && [ "$(dpkg --print-architecture)" != i386 ]; then
  info "adding the i386 architecture to dpkg"
  dpkg --add-architecture i386
fi
if [ "${TWINVM_SKIP_APT_UPDATE:-0}" != 1 ]; then
  info "apt-get update (failures of single indexes, e.g. bookworm-security i386, are tolerated)"
  apt-get update -qq || info "warning: apt-get update reported errors; continuing"
fi

pkg_available() { # name[:arch]=version
  local name="${1%%=*}" ver="${1#*=}"
  # `apt-cache show pkg=missing-version` prints nothing but exits 0: check the output.
  local out; out="$(apt-cache show "$name=$ver" 2>/dev/null || true)"
  grep -qxF "Version: $ver" <<<"$out"
}

missing=()
for spec in "${GUEST_PACKAGES[@]}" "${HOST_PACKAGES[@]}"; do
  s="${spec/:all=/=}"
  pkg_available "$s" || missing+=("$s")
done
if [ "${#missing[@]}" -gt 0 ]; then
  for s in "${missing[@]}"; do
    echo "build.sh: ERROR: pinned package version no longer available from apt: $s" >&2
    echo "          candidates: $(apt-cache policy "${s%%=*}" 2>/dev/null | sed -n 's/^ *Candidate: *//p')" >&2
  done
  die "update the pinned versions at the top of $0 (for the kernel ABI see: apt-cache search --names-only '^linux-image-6\\.1\\.0-[0-9]+-686\$'), or point apt at snapshot.debian.org"
fi

# --- host tools ----------------------------------------------------------------
need_host=()
for spec in "${HOST_PACKAGES[@]}"; do
  n="${spec%%=*}" v="${spec#*=}"
  have="$(dpkg-query -W -f='${Status} ${Version}' "$n" 2>/dev/null || true)"
  [ "$have" = "install ok installed $v" ] || need_host+=("$spec")
done
if [ "${#need_host[@]}" -gt 0 ]; then
  info "installing host tools: ${need_host[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_host[@]}" >/dev/null
fi
for t in gcc readelf objcopy cpio gzip sha256sum find sort sed awk mknod; do
  command -v "$t" >/dev/null || die "missing host tool: $t"
done

# --- download and extract -------------------------------------------------------
mkdir -p "$DEBS"
rm -rf "$PKGS" "$STAGE" "$STUBS"
mkdir -p "$PKGS" "$STAGE" "$STUBS"

declare -A DEB_OF ROOT_OF
for spec in "${GUEST_PACKAGES[@]}"; do
  na="${spec%%=*}" ver="${spec#*=}"
  name="${na%%:*}" arch="${na#*:}"
  fver="${ver//:/%3a}"
  deb="$DEBS/${name}_${fver}_${arch}.deb"
  if [ ! -s "$deb" ]; then
    info "downloading $name=$ver ($arch)"
    dlspec="$name:$arch=$ver"; [ "$arch" = all ] && dlspec="$name=$ver"
    ( cd "$DEBS" && apt-get download -qq "$dlspec" 2>&1 | grep -v 'Download is performed unsandboxed' >&2 || true )
    [ -s "$deb" ] || die "download of $dlspec failed (expected $deb)"
  fi
  got="$(dpkg-deb --show --showformat='${Package} ${Version} ${Architecture}' "$deb")"
  [ "$got" = "$name $ver $arch" ] || die "$deb: unexpected control fields: $got"
  DEB_OF[$name]="$deb"
  ROOT_OF[$name]="$PKGS/$name"
  dpkg-deb -x "$deb" "$PKGS/$name"
done

KROOT="${ROOT_OF[$KERNEL_PKG]}"
MODDIR="$KROOT/lib/modules/$KREL"
[ -d "$MODDIR" ] || die "kernel modules folder $MODDIR not found"
[ -f "$KROOT/boot/vmlinuz-$KREL" ] || die "kernel image boot/vmlinuz-$KREL not found"
SEABIOS_BIN="${ROOT_OF[seabios]}/usr/share/seabios/bios.bin"
[ -f "$SEABIOS_BIN" ] || die "SeaBIOS bios.bin not found in the seabios package"
BUSYBOX="${ROOT_OF[busybox-static]}/bin/busybox"
FIO="${ROOT_OF[fio]}/usr/bin/fio"
[ -f "$BUSYBOX" ] && [ -f "$FIO" ] || die "busybox or fio binary not found"
E2FS_SBIN="${ROOT_OF[e2fsprogs]}/sbin"
for p in "${E2FS_PROGRAMS[@]}"; do [ -f "$E2FS_SBIN/$p" ] || die "e2fsprogs lacks $p"; done

# --- staging tree -----------------------------------------------------------------
info "staging the initramfs"
cd "$STAGE"
mkdir -p bin lib/i386-linux-gnu "lib/modules/$KREL" dev proc sys tmp run mnt root etc usr var
ln -s bin sbin
ln -s ../bin usr/bin
ln -s ../bin usr/sbin
ln -s ../lib usr/lib
ln -s ../tmp var/tmp
ln -s ../proc/mounts etc/mtab
chmod 1777 tmp
chmod 700 root
mknod -m 600 dev/console c 5 1
mknod -m 666 dev/null c 1 3
mknod -m 660 dev/ttyS0 c 4 64

# busybox and all its applets. The host cannot run the i386 binary (no `--list`), so
# read the sorted, NUL-separated applet name table ("[\0[[\0acpid\0...") out of it.
install -m 755 "$BUSYBOX" bin/busybox
mapfile -t APPLETS < <(
  LC_ALL=C grep -obaP '\[\x00\[\[\x00' "$BUSYBOX" | head -n1 | cut -d: -f1 | {
    read -r off || exit 1
    tail -c +"$((off + 1))" "$BUSYBOX" | head -c 8192 | tr '\0' '\n' | awk 'NF==0{exit} {print}'
  })
[ "${#APPLETS[@]}" -gt 100 ] || die "could not read the busybox applet table (${#APPLETS[@]} names)"
printf '%s\n' "${APPLETS[@]}" | LC_ALL=C sort -c 2>/dev/null || die "busybox applet table is not sorted: parse error"
for a in "${APPLETS[@]}"; do
  [[ "$a" =~ ^[][a-z0-9._-]+$ ]] || die "odd busybox applet name: '$a'"
  [ "$a" = busybox ] || ln -s busybox "bin/$a"
done
for a in sh mount insmod sha256sum sync dd cat echo sleep seq setsid cttyhack poweroff reboot stty switch_root base64 \
         ip ping nc httpd; do
  [ -L "bin/$a" ] || die "busybox lacks the required applet '$a'"
done
# e2fsprogs replaces busybox's ext2-only mke2fs (and any e2fs applets): real programs
# for ext2/3/4, with Debian's mke2fs.conf (which defines the ext4 feature set).
for p in "${E2FS_PROGRAMS[@]}"; do rm -f "bin/$p"; install -m 755 "$E2FS_SBIN/$p" "bin/$p"; done
for l in "${!E2FS_LINKS[@]}"; do rm -f "bin/$l"; ln -s "${E2FS_LINKS[$l]}" "bin/$l"; done
install -m 644 "${ROOT_OF[e2fsprogs]}/etc/mke2fs.conf" etc/mke2fs.conf
# Names the Debian busybox build does not provide as applets.
if [ ! -e bin/fsync ]; then   # busybox `sync [-d] FILE...` fsyncs (fdatasyncs) files
  printf '#!/bin/sh\nexec sync "$@"\n' > bin/fsync; chmod 755 bin/fsync
fi

# --- kernel modules with automatic dependency resolution --------------------------
declare -A KO_PATH
while IFS= read -r ko; do
  b="$(basename "$ko" .ko)"; b="${b//-/_}"
  KO_PATH[$b]="$ko"
done < <(find "$MODDIR" -name '*.ko' | sort)
[ "${#KO_PATH[@]}" -gt 0 ] || die "no .ko files in $MODDIR (compressed modules are not supported)"

modinfo_field() { # ko field
  readelf -p .modinfo "$1" 2>/dev/null | sed -n "s/^ *\[ *[0-9a-f]*\] *$2=//p"
}
declare -A MOD_SEEN MOD_VISITING
LOAD_ORDER=()
resolve_module() {
  local m="${1//-/_}" d deps
  [ -n "${MOD_SEEN[$m]:-}" ] && return 0
  [ -n "${MOD_VISITING[$m]:-}" ] && die "module dependency cycle at $m"
  if [ -z "${KO_PATH[$m]:-}" ]; then
    if grep -qx -- "$m" <<<"$(sed 's|.*/||; s|\.ko$||; s|-|_|g' "$MODDIR/modules.builtin" 2>/dev/null)"; then
      info "module $m is built into the kernel; not shipped"; MOD_SEEN[$m]=1; unset "MOD_VISITING[$m]"; return 0
    fi
    die "module $m not found in $KERNEL_PKG"
  fi
  MOD_VISITING[$m]=1
  deps="$(modinfo_field "${KO_PATH[$m]}" depends)"
  for d in ${deps//,/ }; do resolve_module "$d"; done
  unset "MOD_VISITING[$m]"
  MOD_SEEN[$m]=1
  LOAD_ORDER+=("$m")
}
for m in "${MODULES[@]}"; do resolve_module "$m"; done
: > "lib/modules/$KREL/load-order"
for m in "${LOAD_ORDER[@]}"; do
  vm="$(modinfo_field "${KO_PATH[$m]}" vermagic)"
  [ "${vm%% *}" = "$KREL" ] || die "module $m has vermagic '$vm', expected $KREL"
  install -m 644 "${KO_PATH[$m]}" "lib/modules/$KREL/$m.ko"
  echo "$m" >> "lib/modules/$KREL/load-order"
done
# Soft dependencies ("softdep=pre: crypto-crc32c") must be covered by an alias of a
# module that is loaded earlier.
for m in "${LOAD_ORDER[@]}"; do
  for sd in $(modinfo_field "${KO_PATH[$m]}" softdep | sed 's/\(pre\|post\)://g'); do
    ok=
    for p in "${LOAD_ORDER[@]}"; do
      [ "$p" = "$m" ] && break
      if grep -qx -- "$sd" <<<"$(modinfo_field "${KO_PATH[$p]}" alias)"; then ok=1; break; fi
    done
    [ -n "$ok" ] || info "warning: softdep '$sd' of $m is not provided by an earlier module"
  done
done
info "module load order: ${LOAD_ORDER[*]}"

# --- fio and e2fsprogs, their real libraries, and stubs for fio's heavy engine libraries
install -m 755 "$FIO" bin/fio
ELF_PROGRAMS=(bin/fio)
for p in "${E2FS_PROGRAMS[@]}"; do ELF_PROGRAMS+=("bin/$p"); done
INTERP="$(readelf -l "$FIO" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')"
[ "$INTERP" = /lib/ld-linux.so.2 ] || die "unexpected fio interpreter: $INTERP"

is_stub() { local s; for s in "${STUB_SONAMES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
find_lib() { # soname -> path of the real file in an extracted guest package
  local r d
  for r in "$PKGS"/*; do
    for d in lib/i386-linux-gnu usr/lib/i386-linux-gnu lib usr/lib; do
      if [ -e "$r/$d/$1" ]; then readlink -f "$r/$d/$1"; return 0; fi
    done
  done
  return 1
}
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }

declare -A LIB_DONE
REAL_LIBS=()
queue=()
for elf in "${ELF_PROGRAMS[@]}"; do queue+=($(needed "$elf")); done
while [ "${#queue[@]}" -gt 0 ]; do
  so="${queue[0]}"; queue=("${queue[@]:1}")
  [ -n "${LIB_DONE[$so]:-}" ] && continue
  LIB_DONE[$so]=1
  is_stub "$so" && continue
  src="$(find_lib "$so")" || die "a shipped program needs $so, which is neither in the pinned packages nor a stub"
  install -m 755 "$src" "lib/i386-linux-gnu/$so"
  REAL_LIBS+=("$so")
  queue+=($(needed "$src"))
done
ln -s i386-linux-gnu/ld-linux.so.2 lib/ld-linux.so.2
[ -f lib/i386-linux-gnu/ld-linux.so.2 ] || die "ld-linux.so.2 was not pulled in"

# Undefined, non-weak dynamic symbols of an ELF file: "name" or "name@VERSION".
undef_syms() {
  readelf --dyn-syms -W "$1" | awk '$7=="UND" && $5!="WEAK" && $8!="" {print $8}' | sort -u
}
# Defined dynamic symbols: "name" and, if versioned, "name@VERSION".
def_syms() {
  readelf --dyn-syms -W "$1" | awk '$7!="UND" && $8!="" && $5!="LOCAL" {
      n=$8; sub(/@@?.*/, "", n); print n
      if ($8 ~ /@/) { v=$8; sub(/^[^@]*@@?/, "", v); print n "@" v } }' | sort -u
}
# version name -> file that must define it (from .gnu.version_r)
declare -A VER_FILE
while read -r f v; do VER_FILE[$v]="$f"; done < <(
  readelf -V -W "$FIO" | awk '/Version needs section/{n=1} n && /File:/{f=$0; sub(/.*File: /,"",f); sub(/ .*/,"",f)}
                              n && /Name:/{v=$0; sub(/.*Name: /,"",v); sub(/ .*/,"",v); print f, v}')

REAL_DEFS="$WORK/real-defs.txt"
for so in "${REAL_LIBS[@]}"; do def_syms "lib/i386-linux-gnu/$so"; done | sort -u > "$REAL_DEFS"

declare -A STUB_SYMS   # soname -> lines "VERSION name" (VERSION "-" when unversioned)
while read -r sym; do
  name="${sym%%@*}"
  if [[ "$sym" == *@* ]]; then
    ver="${sym#*@}"; ver="${ver%% *}"
    file="${VER_FILE[$ver]:-}"
    [ -n "$file" ] || die "fio imports $sym but no version-needs entry names $ver"
    is_stub "$file" || continue          # provided by a real library (checked below)
    STUB_SYMS[$file]+="$ver $name"$'\n'
  else
    grep -qx -- "$name" "$REAL_DEFS" && continue
    file=
    for p in "${!STUB_PREFIX[@]}"; do [[ "$name" == "$p"* ]] && file="${STUB_PREFIX[$p]}"; done
    [ -n "$file" ] || die "fio imports unversioned symbol '$name' that no real library defines and no stub prefix matches"
    STUB_SYMS[$file]+="- $name"$'\n'
  fi
done < <(undef_syms "$FIO")
readelf --dyn-syms -W "$FIO" | awk '$7=="UND" && $5!="WEAK" && $4!="FUNC" && $8!=""{print $8}' > "$WORK/fio-undef-data.txt"

for so in "${STUB_SONAMES[@]}"; do
  syms="${STUB_SYMS[$so]:-}"
  [ -n "$syms" ] || die "fio imports nothing from stub library $so: drop it from STUB_SONAMES?"
  base="$STUBS/${so%%.so*}"
  msg="fio: this I/O engine is not available in the twinvm guest ($so is a stub)"
  {
    echo "/* Generated by images/build.sh: failing stubs for $so as imported by fio $FIO_VERSION. */"
    echo '	.text'
    echo '	.p2align 4'
    echo '.Lfail:'
    echo '	call 1f'
    echo '1:	popl %ecx'
    echo '	addl $(.Lmsg - 1b), %ecx'
    echo '	movl $4, %eax          /* write(2, msg, len) */'
    echo '	movl $2, %ebx'
    echo '	movl $(.Lmsgend - .Lmsg), %edx'
    echo '	int $0x80'
    echo '	movl $252, %eax        /* exit_group(1) */'
    echo '	movl $1, %ebx'
    echo '	int $0x80'
    echo '	hlt'
    echo ".Lmsg:	.ascii \"$msg\\n\""
    echo '.Lmsgend:'
    printf '%s' "$syms" | awk 'NF{print $2}' | sort -u | while read -r f; do
      grep -qx -- "$f" "$WORK/fio-undef-data.txt" && die "fio imports data symbol $f from $so: cannot stub"
      printf '\t.globl %s\n\t.type %s, @function\n%s:\tjmp .Lfail\n\t.size %s, .-%s\n' "$f" "$f" "$f" "$f" "$f"
    done
    echo '	.section .note.GNU-stack,"",@progbits'
  } > "$base.S"
  # Version script: one node per version (in first-seen order, each inheriting the
  # previous one), or an anonymous node when the library is unversioned.
  {
    vers="$(printf '%s' "$syms" | awk 'NF{print $1}' | sort -u)"
    if [ "$vers" = "-" ]; then
      echo "{ global:"; printf '%s' "$syms" | awk 'NF{print "  " $2 ";"}' | sort -u; echo "  local: *; };"
    else
      grep -qx -- - <<<"$vers" && die "$so mixes versioned and unversioned imports"
      prev=
      for v in $(echo "$vers" | sort -V); do
        echo "$v { global:"; printf '%s' "$syms" | awk -v v="$v" '$1==v{print "  " $2 ";"}' | sort -u
        if [ -z "$prev" ]; then echo "  local: *; };"; else echo "} $prev;"; fi
        prev="$v"
      done
    fi
  } > "$base.map"
  gcc -m32 -nostdlib -shared -fPIC -s -Wl,-soname,"$so" -Wl,--version-script="$base.map" \
      -Wl,-z,noexecstack -Wl,--hash-style=both -o "$base.so" "$base.S" \
    || die "building stub $so failed (is gcc-multilib installed?)"
  install -m 755 "$base.so" "lib/i386-linux-gnu/$so"
done

# Check, as ld.so does, that every non-weak import "name@VERSION" of every ELF file in
# the image is defined with that version by a library in the image, every unversioned
# import is defined somewhere, every (file, version) it needs is defined by that file,
# and every NEEDED library is present.
info "checking dynamic symbol resolution"
ALL_DEFS="$WORK/all-defs.txt" ALL_VERDEFS="$WORK/all-verdefs.txt"
for f in lib/i386-linux-gnu/*.so*; do def_syms "$f"; done | sort -u > "$ALL_DEFS"
for f in lib/i386-linux-gnu/*.so*; do
  readelf -V -W "$f" | awk -v f="$(basename "$f")" '/Version definition section/{n=1} /Version needs section/{n=0}
    n && /Rev:/ {v=$0; sub(/.*Name: /,"",v); sub(/ .*/,"",v); print f, v}'
done | sort -u > "$ALL_VERDEFS"
for elf in "${ELF_PROGRAMS[@]}" lib/i386-linux-gnu/*.so*; do
  while read -r sym; do
    grep -qx -- "$sym" "$ALL_DEFS" || die "$elf imports $sym, which no library in the image defines"
  done < <(undef_syms "$elf")
  while read -r f v; do
    grep -qx -- "$f $v" "$ALL_VERDEFS" || die "$elf needs version $v from $f, which $f does not define"
  done < <(readelf -V -W "$elf" | awk '/Version needs section/{n=1} /Version definition section/{n=0}
      n && /File:/{f=$0; sub(/.*File: /,"",f); sub(/ .*/,"",f)} n && /Name:/{v=$0; sub(/.*Name: /,"",v); sub(/ .*/,"",v); print f, v}')
  for so in $(needed "$elf"); do [ -f "lib/i386-linux-gnu/$so" ] || die "$elf needs $so, missing"; done
done

# --- /init and small /etc files ------------------------------------------------------
{
cat <<'EOF'
#!/bin/sh
# twinvm guest init (busybox sh, PID 1). Generated by images/build.sh.
export PATH=/bin
EOF
# The network's defaults, which the kernel command line can override.
printf 'NET_IP=%s NET_GW=%s NET_MTU=%s\n' "$GUEST_IP" "$GUEST_GW" "$GUEST_MTU"
cat <<'EOF'
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true   # devtmpfs may already be there
mount -t tmpfs -o mode=1777 tmpfs /tmp
exec </dev/ttyS0 >/dev/ttyS0 2>&1

KREL="$(uname -r)"
for m in $(cat "/lib/modules/$KREL/load-order"); do
  [ -d "/sys/module/$m" ] && continue               # built in or already loaded
  if ! out="$(insmod "/lib/modules/$KREL/$m.ko" 2>&1)"; then
    [ -d "/sys/module/$m" ] || echo "twinvm-init: insmod $m failed: $out"
  fi
done

# A bigger guest: `twinvm.root=DEV` on the kernel command line mounts DEV (ext4) and
# makes it the root file system; `twinvm.init=PATH` names its init (default
# /sbin/twinvm-init, which images/debian-rootfs/build-rootfs.sh installs).
# `twinvm.ip=ADDR/PREFIX` and `twinvm.gw=ADDR` (empty: no default route) set eth0's address.
ROOT_DEV= ROOT_INIT=/sbin/twinvm-init
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    twinvm.root=*) ROOT_DEV="${arg#twinvm.root=}" ;;
    twinvm.init=*) ROOT_INIT="${arg#twinvm.init=}" ;;
    twinvm.ip=*) NET_IP="${arg#twinvm.ip=}" ;;
    twinvm.gw=*) NET_GW="${arg#twinvm.gw=}" ;;
  esac
done

# The NIC (virtio-net, eth0) with a static address, before the ready marker. A twinvm.root
# system keeps it: switch_root leaves the kernel's network state as it is.
ip link set lo up
if [ ! -e /sys/class/net/eth0 ]; then
  echo "twinvm-init: no eth0 (virtio-net): the guest has no network"
elif ! { ip link set eth0 mtu "$NET_MTU" up && ip addr add "$NET_IP" dev eth0 &&
         { [ -z "$NET_GW" ] || ip route add default via "$NET_GW" dev eth0; }; }; then
  echo "twinvm-init: configuring eth0 ($NET_IP, gateway ${NET_GW:-none}, MTU $NET_MTU) failed"
fi

if [ -n "$ROOT_DEV" ]; then
  mkdir -p /newroot
  if mount -t ext4 "$ROOT_DEV" /newroot && [ -x "/newroot$ROOT_INIT" ]; then
    umount /tmp; mount --move /dev /newroot/dev; umount /sys /proc
    exec switch_root /newroot "$ROOT_INIT"
  fi
  echo "twinvm-init: cannot start $ROOT_INIT from $ROOT_DEV; staying in the initramfs"
  umount /newroot 2>/dev/null
fi

# Hand PID 1 over to busybox init (/etc/inittab): it prints the ready marker, runs a
# login shell on ttyS0 as its controlling tty, respawns it when it exits, and handles
# poweroff/reboot/halt (busybox ash runs those applets directly, and they signal PID 1).
exec /bin/init
EOF
} > init
chmod 755 init

# The start-up command of a guest overlay (harness/overlay/archive.ts), run before the
# ready marker so that the guest is ready only once it has run.
cat > bin/twinvm-startup <<'EOF'
#!/bin/sh
# Runs /etc/twinvm/startup (installed by a twinvm guest overlay) once at boot; its
# output goes to /var/log/twinvm-startup.log, its exit code to .status beside it.
[ -x /etc/twinvm/startup ] || exit 0
/etc/twinvm/startup </dev/null >/var/log/twinvm-startup.log 2>&1
echo $? > /var/log/twinvm-startup.status
EOF
chmod 755 bin/twinvm-startup
mkdir -p var/log

cat > etc/inittab <<EOF
# busybox init; generated by images/build.sh
::sysinit:/bin/twinvm-startup
::sysinit:/bin/echo $READY_MARKER
ttyS0::respawn:-/bin/sh
::ctrlaltdel:/bin/reboot
::shutdown:/bin/sync
EOF
cat > etc/profile <<'EOF'
export PATH=/bin HOME=/root PS1='# '
EOF
printf 'root:x:0:0:root:/root:/bin/sh\n' > etc/passwd
printf 'root:x:0:\n' > etc/group
chmod 644 etc/passwd etc/group etc/inittab etc/profile
{
  echo "twinvm default guest"
  echo "kernel $KREL ($KERNEL_PKG $KERNEL_VERSION)"
  for spec in "${GUEST_PACKAGES[@]}"; do echo "package $spec"; done
  echo "modules ${LOAD_ORDER[*]}"
  echo "stubs ${STUB_SONAMES[*]}"
} > etc/twinvm-image
chmod 644 etc/twinvm-image

# --- outputs ---------------------------------------------------------------------------
info "writing outputs"
find . -mindepth 1 -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort \
  | cpio -o -H newc -R 0:0 --reproducible --quiet \
  | gzip -9 -n > "$WORK/initramfs.cpio.gz"
install -m 644 "$WORK/initramfs.cpio.gz" "$OUT/initramfs.cpio.gz"
install -m 644 "$KROOT/boot/vmlinuz-$KREL" "$OUT/vmlinuz"
install -m 644 "$SEABIOS_BIN" "$OUT/bios.bin"
rm -f "$OUT/vgabios.bin"   # not needed: v86 boots the serial-console guest without it

# Licence/copyright files of every package whose files are shipped.
rm -rf "$OUT/licenses"; mkdir -p "$OUT/licenses"
for spec in "${GUEST_PACKAGES[@]}"; do
  name="${spec%%:*}"
  cp "${ROOT_OF[$name]}/usr/share/doc/$name/copyright" "$OUT/licenses/$name.copyright" \
    || die "no copyright file in $name"
  chmod 644 "$OUT/licenses/$name.copyright"
done

# manifest.json (all values are plain tokens from dpkg and this script; no escaping needed)
json_str() { case "$1" in *'"'*|*'\'*) die "unexpected character in '$1'";; esac; printf '"%s"' "$1"; }
{
  echo '{'
  echo '  "description": "twinvm default guest: SeaBIOS + Debian i386 kernel + busybox/fio/e2fsprogs initramfs with virtio-blk and virtio-net drivers, built by images/build.sh from Debian bookworm packages",'
  echo "  \"source_date_epoch\": $SOURCE_DATE_EPOCH,"
  echo "  \"kernel_release\": $(json_str "$KREL"),"
  echo "  \"cmdline\": $(json_str "$CMDLINE"),"
  echo "  \"ready_marker\": $(json_str "$READY_MARKER"),"
  echo "  \"serial\": \"ttyS0 (v86 serial0): the ready marker is printed once, then busybox init runs a login sh (PS1='# ') on ttyS0 as its controlling tty and respawns it on exit; poweroff/reboot work (no ACPI: the kernel prints 'reboot: System halted' and the CPU halts)\","
  echo "  \"memory_min_mib\": 128,"
  echo "  \"network\": {\"interface\": \"eth0\", \"device\": \"virtio-net (virtio_net module)\", \"address\": $(json_str "$GUEST_IP"), \"gateway\": $(json_str "$GUEST_GW"), \"mtu\": $GUEST_MTU, \"kernel_args\": \"twinvm.ip=ADDR/PREFIX twinvm.gw=ADDR (empty: no default route)\"},"
  echo '  "files": ['
  first=1
  for f in bios.bin vmlinuz initramfs.cpio.gz; do
    [ -n "$first" ] || echo ','
    first=
    printf '    {"name": %s, "size": %s, "sha256": %s}' "$(json_str "$f")" "$(stat -c %s "$OUT/$f")" \
      "$(json_str "$(sha256sum "$OUT/$f" | cut -d' ' -f1)")"
  done
  echo; echo '  ],'
  printf '  "modules_load_order": ['; first=1
  for m in "${LOAD_ORDER[@]}"; do [ -n "$first" ] || printf ', '; first=; json_str "$m"; done; echo '],'
  printf '  "stub_libraries": ['; first=1
  for s in "${STUB_SONAMES[@]}"; do [ -n "$first" ] || printf ', '; first=; json_str "$s"; done; echo '],'
  echo '  "source_note": "GPL/LGPL compliance: the corresponding source of every package is in the Debian archive (and snapshot.debian.org): apt-get source <source>=<source_version>",'
  echo '  "packages": ['
  first=1
  for spec in "${GUEST_PACKAGES[@]}"; do
    name="${spec%%:*}"; deb="${DEB_OF[$name]}"
    ver="$(dpkg-deb -f "$deb" Version)"; arch="$(dpkg-deb -f "$deb" Architecture)"
    srcf="$(dpkg-deb -f "$deb" Source)"
    src="${srcf%% *}"; [ -n "$src" ] || src="$name"
    sver="$ver"; [[ "$srcf" == *"("*")"* ]] && { sver="${srcf#*(}"; sver="${sver%)*}"; }
    [ -n "$first" ] || echo ','
    first=
    printf '    {"package": %s, "version": %s, "architecture": %s, "source": %s, "source_version": %s, "get_source": %s' \
      "$(json_str "$name")" "$(json_str "$ver")" "$(json_str "$arch")" "$(json_str "$src")" \
      "$(json_str "$sver")" "$(json_str "apt-get source $src=$sver")"
    if [ "$src" = linux-signed-i386 ]; then
      printf ', "note": %s' "$(json_str "the signed kernel is built from the linux source package: apt-get source linux=$KERNEL_VERSION")"
    fi
    printf '}'
  done
  echo; echo '  ],'
  echo '  "build_tools": ['
  first=1
  for spec in "${HOST_PACKAGES[@]}"; do
    [ -n "$first" ] || echo ','
    first=
    printf '    {"package": %s, "version": %s, "architecture": %s, "shipped": false}' \
      "$(json_str "${spec%%=*}")" "$(json_str "${spec#*=}")" "$(json_str "$(dpkg --print-architecture)")"
  done
  echo; echo '  ]'
  echo '}'
} > "$OUT/manifest.json"

ls -l "$OUT/bios.bin" "$OUT/vmlinuz" "$OUT/initramfs.cpio.gz" "$OUT/manifest.json" >&2
info "initramfs: $(find . -mindepth 1 | wc -l) entries, $(du -sb . | cut -f1) bytes unpacked"
info "done"
