#!/usr/bin/env bash
# Builds, once per machine, what the booting Pi (booting-pi.sh) is made of: a Debian trixie arm64
# root file system with systemd 257, OpenSSH, Nix 2.26 and kexec-tools; a real arm64 Linux kernel
# (Debian's) with its modules; and a small initrd of our own (busybox) that loads the modules for
# a virtio disk and ext4, mounts the root named by `root=` and starts the `init=` of the command
# line, as NixOS's stage 1 does. Whatever stage 1 cannot do (no such root, no such init) ends it,
# and the kernel panics: that is how a broken initrd or kernel looks on a Pi.
#
# The result is cached under $NDA_BPI_CACHE (a new run does nothing while this script and the
# host's busybox are unchanged) and printed as shell variables (rootfs=, kernel=, initrd=, version=).
# About 8 minutes on a fresh machine: debootstrap of arm64 runs through qemu-user-static.
#
#   booting-pi-image.sh          build what is missing or stale; print the variables
set -euo pipefail
CACHE=${NDA_BPI_CACHE:-/var/cache/nda-testbed/booting-pi}
MIRROR=${NDA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
TESTBED=${TESTBED:-/var/lib/nda-testbed}
busybox=$TESTBED/fixture/busybox/bin/busybox
stamp=$(sha256sum <"$0" | cut -c1-16)
log() { echo "booting-pi-image: $*" >&2; }

print() {
  local v
  v=$(cat "$CACHE/kernel-version")
  printf 'rootfs=%s\nkernel=%s\ninitrd=%s\nversion=%s\n' "$CACHE/rootfs" "$CACHE/Image" "$CACHE/initrd" "$v"
}
if [ "$(cat "$CACHE/.stamp" 2>/dev/null)" = "$stamp" ]; then print; exit 0; fi
[ "$(id -u)" = 0 ] || { log "needs root (debootstrap, chroot)"; exit 1; }
[ -x "$busybox" ] || { log "needs the fixture's arm64 busybox at $busybox (testbed/setup.sh)"; exit 1; }
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null ||
  { log "needs the qemu-aarch64 binfmt (testbed/setup.sh enables it)"; exit 1; }

mkdir -p "$CACHE"
rm -f "$CACHE/.stamp"
root=$CACHE/rootfs
start=$(date +%s)
# --- The root file system (the slow part: kept while the list of packages is the same).
packages=systemd,systemd-sysv,udev,libpam-systemd,dbus,openssh-server,iproute2,procps,util-linux,kmod,kexec-tools,zstd,xz-utils,gzip,e2fsprogs
if [ "$(cat "$CACHE/.rootfs" 2>/dev/null)" != "$packages+nix-bin" ]; then
  rm -rf "$root" "$CACHE/.rootfs"
  log "debootstrap trixie arm64 into $root (once per machine, several minutes through QEMU)"
  debootstrap --arch=arm64 --variant=minbase --include="$packages" trixie "$root" "$MIRROR" \
    >"$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  mount -t proc proc "$root/proc"
  trap 'umount "$root/proc" 2>/dev/null || true' EXIT
  # nix-bin cannot be in --include: debootstrap fails on its virtual dependency perl-dbdabi-94.
  DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -q --no-install-recommends nix-bin \
    >>"$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # The kernel: Debian's arm64 package, unpacked (its maintainer scripts would build an initrd with
  # initramfs-tools; ours is below), its module index made in the chroot.
  chroot "$root" sh -c 'cd /tmp && apt-get download -q "$(apt-cache depends linux-image-arm64 | sed -n "s/.*Depends: \(linux-image-[0-9].*\)/\1/p" | head -n 1)"' \
    >>"$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  deb=$(find "$root/tmp" -maxdepth 1 -name 'linux-image-[0-9]*_arm64.deb' | head -n 1)
  dpkg-deb -x "$deb" "$root"
  rm -f "$root"/tmp/*.deb
  chroot "$root" apt-get clean
  umount "$root/proc"
  trap - EXIT
  echo "$packages+nix-bin" >"$CACHE/.rootfs"
  log "root file system ready in $(($(date +%s) - start)) s"
fi
version=$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | head -n 1)
echo "$version" >"$CACHE/kernel-version"
chroot "$root" depmod -a "$version"

# --- The kernel image U-Boot's booti loads: uncompressed (Debian's vmlinuz is a gzipped Image).
zcat "$root/boot/vmlinuz-$version" >"$CACHE/Image.tmp" 2>/dev/null || cp "$root/boot/vmlinuz-$version" "$CACHE/Image.tmp"
mv "$CACHE/Image.tmp" "$CACHE/Image"

# --- The initrd: busybox, the modules for the root disk (with their dependencies, in load order,
# decompressed: busybox's insmod takes plain .ko files) and init.
ird=$(mktemp -d)
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,modules}
cp "$busybox" "$ird/bin/busybox"
for a in sh mount umount mkdir sleep cat insmod switch_root echo test ls; do ln -s busybox "$ird/bin/$a"; done
moddir=$root/lib/modules/$version
deps() { # MODULE-PATH (relative): its dependencies first, then itself, each once
  local m=$1 d
  # shellcheck disable=SC2013 # the dependencies are words of one line
  for d in $(sed -n "s|^$m: *||p" "$moddir/modules.dep"); do deps "$d"; done
  echo "$m"
}
order=$(for name in virtio_pci virtio_blk crc32c_generic ext4; do
  grep -qE "/$name\.ko$" "$moddir/modules.builtin" && continue
  m=$(grep -E "/$name\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -n 1 | cut -d: -f1)
  [ -n "$m" ] || { log "no module $name in $version"; exit 1; }
  deps "$m"
done | awk '!seen[$0]++')
for m in $order; do
  base=$(basename "$m"); base=${base%.xz}; base=${base%.zst}
  case $m in
    *.xz) xz -dc "$moddir/$m" >"$ird/modules/$base" ;;
    *.zst) zstd -qdc "$moddir/$m" >"$ird/modules/$base" ;;
    *) cp "$moddir/$m" "$ird/modules/$base" ;;
  esac
  echo "$base" >>"$ird/modules/order"
done
cat >"$ird/init" <<'INIT'
#!/bin/sh
# Stage 1 (nix-deploy-action's testbed): mount the root of root= and start init= on it. Any
# failure ends this process, and the kernel panics ("Attempted to kill init").
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod "/modules/$m" 2>/dev/null; done
root= init=/sbin/init
for a in $(cat /proc/cmdline); do
  case $a in root=*) root=${a#root=} ;; init=*) init=${a#init=} ;; esac
done
n=0
while [ ! -b "$root" ] && [ "$n" -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
if ! mount -t ext4 -o rw "$root" /newroot; then
  echo "stage 1: cannot mount the root file system $root"
  exit 1
fi
if [ ! -x "/newroot$init" ] && [ ! -L "/newroot$init" ]; then
  echo "stage 1: $init not found on $root"
  exit 1
fi
umount /proc /sys
mount --move /dev /newroot/dev
echo "stage 1: starting $init"
exec switch_root /newroot "$init"
INIT
chmod 755 "$ird/init"
# The same bytes each time (no dates in it): the fixture names the initrd by its hash.
find "$ird" -exec touch -h -d @0 {} +
(cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc --quiet --reproducible | gzip -n -1 >"$CACHE/initrd.tmp")
mv "$CACHE/initrd.tmp" "$CACHE/initrd"
rm -rf "$ird"

echo "$stamp" >"$CACHE/.stamp"
log "ready in $(($(date +%s) - start)) s"
print
