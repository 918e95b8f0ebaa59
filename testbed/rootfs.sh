#!/usr/bin/env bash
# Builds, once per machine, the root file system the systemd Pi boots (see systemd-pi.sh): Debian
# trixie amd64 with systemd 257 as PID 1, OpenSSH, logind (through PAM) and Nix 2.26 with its
# nix-daemon as a systemd service, as on NixOS 25.x. Its userland is x86_64 (an arm64 systemd cannot
# start units under QEMU user emulation); the fixtures' binaries stay aarch64, run through binfmt.
#
# The result is shared read-only by every systemd Pi (each boots its own overlay of it) and cached:
# a second run does nothing. It is rebuilt when this script changes (its hash is stamped inside).
# About 2 minutes on a fresh machine (debootstrap ~85 s, apt-get install nix-bin ~30 s).
#
#   rootfs.sh            build it if missing or stale; print its path
set -euo pipefail
ROOTFS=${NDA_ROOTFS:-/var/cache/nda-testbed/trixie-rootfs}
MIRROR=${NDA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
stamp=$(sha256sum "$0" | cut -c1-16)

if [ "$(cat "$ROOTFS/.nda-rootfs" 2>/dev/null)" = "$stamp" ]; then
  echo "$ROOTFS"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "rootfs: needs root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "rootfs: needs debootstrap (scripts/install-deps.sh)" >&2; exit 1; }

tmp="$ROOTFS.building"
rm -rf "$tmp" "$ROOTFS"
mkdir -p "$(dirname "$ROOTFS")"
echo "rootfs: debootstrap trixie into $tmp (once per machine, about 2 minutes)" >&2
start=$(date +%s)
# zstd, xz and gzip: the decompressors a NixOS system path has (the copy picks zstd when both ends do);
# sudo for the tests of a non-root target user.
# nix-bin cannot be in --include: debootstrap fails on its virtual dependency perl-dbdabi-94.
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,libpam-systemd,dbus,openssh-server,libdbi-perl,iproute2,procps,util-linux,zstd,xz-utils,gzip,sudo \
  trixie "$tmp" "$MIRROR" >"$tmp.log" 2>&1 || { tail -20 "$tmp.log" >&2; exit 1; }
cleanup() { umount "$tmp/proc" 2>/dev/null || true; }
trap cleanup EXIT
mount -t proc proc "$tmp/proc"
# nix-setup-systemd: nix-daemon's units and the nixbld build users, as NixOS has them.
DEBIAN_FRONTEND=noninteractive chroot "$tmp" apt-get install -y -q --no-install-recommends nix-bin nix-setup-systemd \
  >>"$tmp.log" 2>&1 || { tail -20 "$tmp.log" >&2; exit 1; }
chroot "$tmp" apt-get clean
umount "$tmp/proc"
trap - EXIT

# What every boot of every Pi has in common (per-Pi files go into its own overlay: systemd-pi.sh).
# No first-boot wizard; an empty machine-id is filled in at each boot (nspawn gives one).
: >"$tmp/etc/machine-id"
echo 'LANG=C.UTF-8' >"$tmp/etc/default/locale"
# As on NixOS: nix-daemon runs; root's commands use the store directly, as NixOS's root does.
mkdir -p "$tmp/etc/nix"
cat >"$tmp/etc/nix/nix.conf" <<'CONF'
sandbox = false
substituters =
CONF
chroot "$tmp" systemctl enable nix-daemon.socket nix-daemon.service ssh.service >/dev/null
# Units a container does not need (and that only slow its boot down).
for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer; do
  chroot "$tmp" systemctl mask "$u" >/dev/null 2>&1 || true
done

# NixOS's stage 2 (the boot stand-in): at every boot, point /run/booted-system and
# /run/current-system at the system the boot entry names (a one-shot entry first, if one is set:
# it is consumed, as systemd-boot's oneshot), before sshd starts.
cat >"$tmp/usr/local/sbin/nda-stage2" <<'SH'
#!/bin/sh
# The boot loader's choice, as NixOS's stage 1 passes it to stage 2.
entries=/nix/var/nix-fixture
system=''
if [ -s "$entries/boot-oneshot" ]; then
  system=$(cat "$entries/boot-oneshot")
  rm -f "$entries/boot-oneshot"
elif [ -s "$entries/boot-default" ]; then
  system=$(cat "$entries/boot-default")
fi
[ -n "$system" ] && [ -e "$system" ] || exit 0
ln -sfn "$system" /run/booted-system
ln -sfn "$system" /run/current-system
SH
chmod 755 "$tmp/usr/local/sbin/nda-stage2"
cat >"$tmp/etc/systemd/system/nda-stage2.service" <<'UNIT'
[Unit]
Description=NixOS stage 2 stand-in: the booted system from the boot entry
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target ssh.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/nda-stage2
RemainAfterExit=yes

[Install]
WantedBy=sysinit.target
UNIT
chroot "$tmp" systemctl enable nda-stage2.service >/dev/null 2>&1

echo "$stamp" >"$tmp/.nda-rootfs"
mv "$tmp" "$ROOTFS"
rm -f "$tmp.log"
echo "rootfs: ready in $(($(date +%s) - start)) s" >&2
echo "$ROOTFS"
