#!/usr/bin/env bash
# The booting Pi (bpi): a QEMU aarch64 machine (`-M virt`, software emulation) that boots as a
# Raspberry Pi 3 with a stock NixOS SD image does: U-Boot (Debian's u-boot-qemu) reads
# /boot/extlinux/extlinux.conf from the root partition, loads the default entry's kernel (Debian's
# arm64 Linux) and initrd, and the initrd starts the entry's `init` (the system's stage 2, which
# starts systemd). A hardware watchdog (i6300esb) resets the machine when nothing feeds it. It sits
# behind the jump host only, at 10.99.12.2 (a bridge in the namespace nda-bpi, whose tap is the
# machine's network card). Under emulation a boot takes tens of seconds to sshd, as a Pi's does.
#
# Its disk, as a Pi's SD card: a FAT partition (the firmware partition; /boot/firmware) and the
# ext4 root. U-Boot keeps its environment in the machine's second flash bank; it holds the
# action's one-shot hook (nixos/boot-once.sh, made by uboot-env.sh), which reads and empties
# nix-deploy-once on the FAT partition, so a new system is booted once (services.nix-deploy-action.
# bootTrial.bootOnce, written here as the module would). The disk is a copy-on-write layer over a
# base image with fixture generation bpi-gen0 installed, the flash a copy of its first state: a
# reset forgets everything a test did. Everything it starts is recorded by pid and ended by pid.
#   booting-pi.sh image          build the image and base disk if missing (setup.sh; about 9 min
#                                on a fresh machine, then cached)
#   booting-pi.sh start          power it on (idempotent) and wait until sshd answers
#   booting-pi.sh stop           power it off (QEMU ended by its pid)
#   booting-pi.sh reset          power it off, a fresh disk (generation 0), power it on
#   booting-pi.sh wait-ssh SECS  until sshd answers (exit 1 after SECS)
#   booting-pi.sh boots          how many times it has started U-Boot since its last power-on
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TESTBED=${TESTBED:-/var/lib/nda-testbed}
PI=bpi
d=$TESTBED/bpi
k=$TESTBED/keys
addr=10.99.12.2
jump_if=eth6
pidfile=$d/qemu.pid
# shellcheck source=testbed/pi-os.sh
. "$here/pi-os.sh"
export NIX_CONFIG=$'substituters =\nextra-platforms = aarch64-linux'
nixx() { nix --extra-experimental-features 'nix-command flakes' "$@"; }
log() { echo "booting-pi: $*" >&2; }
# shellcheck source=testbed/pidfile.sh
. "$here/pidfile.sh"
pi_ssh() { ssh -F "$TESTBED/ssh_config" -o ConnectTimeout=5 bpi "$@"; }

# The kernel and initrd by hash for the fixture (lib.nix's bpiBoot): Nix copies them into the store.
# Each under a name of its hash: Nix caches what a URL gave for an hour, so a URL names one content.
# usage: fixture_boot_files VARS   (what booting-pi-image.sh printed)
fixture_boot_files() {
  local vars=$1 f h file out=$d/bpi-boot.nix.new
  mkdir -p "$d/boot-files"
  echo '{' >"$out"
  for f in kernel initrd; do
    file=$(sed -n "s/^$f=//p" <<<"$vars")
    h=$(nix-hash --type sha256 --flat --base32 "$file")
    [ -f "$d/boot-files/$h-$f" ] || cp "$file" "$d/boot-files/$h-$f"
    echo "  $f = { url = \"file://$d/boot-files/$h-$f\"; sha256 = \"$h\"; name = \"$f\"; };" >>"$out"
  done
  echo '}' >>"$out"
  # In one step: the fixture flake is evaluated meanwhile by the other lanes (scripts/test.sh).
  mv "$out" "$TESTBED/fixture/bpi-boot.nix"
}

# The base disk: the root file system with the Pi's own files and generation 0, as an ext4
# partition (label NIXOS_SD, like NixOS's SD image) on an MBR disk. Rebuilt when any part changes.
base_disk() {
  local vars rootfs attr gen0 stamp staging
  vars=$("$here/booting-pi-image.sh")
  rootfs=$(sed -n 's/^rootfs=//p' <<<"$vars")
  fixture_boot_files "$vars"
  attr="path:$TESTBED/fixture#nixosConfigurations.bpi-gen0.config.system.build.toplevel"
  nixx build --no-link "$attr"
  gen0=$(nixx eval --raw "$attr.outPath")
  stamp=$({ echo "$gen0"; cat "$rootfs/../.stamp" "$0" "$here/pi-os.sh" "$here/uboot-env.sh" "$here/../nixos/boot-once.sh" \
    "$k/bpi_host_ed25519.pub" "$TESTBED/pi/authorized_keys"; } | sha256sum | cut -c1-16)
  if [ "$(cat "$d/base.stamp" 2>/dev/null)" = "$stamp" ] && [ -f "$d/base.img" ] && [ -f "$d/uboot-env.base" ]; then return 0; fi
  log "building the base disk (generation 0: $gen0)"
  mkdir -p "$d"
  staging=$d/staging
  stop
  rm -rf "$staging" "$d/base.img" "$d/base.stamp" "$d/uboot-env.base" "$d/disk.qcow2" "$d/uboot-env.img"
  cp -a "$rootfs" "$staging"
  configure "$staging"
  # No first-boot wizard: the machine has its id.
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$staging/etc/machine-id"
  mkdir -p "$staging/etc/nix"
  printf 'sandbox = false\nsubstituters =\nbuild-users-group =\n' >"$staging/etc/nix/nix.conf"
  # The LAN: a static address on eth0, as the Pi's DHCP lease would give it.
  cat >"$staging/usr/local/sbin/nda-network" <<SH
#!/bin/sh
n=0
while [ ! -e /sys/class/net/eth0 ] && [ \$n -lt 300 ]; do sleep 0.1; n=\$((n + 1)); done
ip link set lo up
ip addr replace $addr/24 dev eth0
ip link set eth0 up
ip route replace default via ${addr%.2}.1
SH
  chmod 755 "$staging/usr/local/sbin/nda-network"
  cat >"$staging/etc/systemd/system/nda-network.service" <<'UNIT'
[Unit]
Description=testbed LAN (eth0, static address)
After=systemd-udevd.service
Before=network.target ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/nda-network

[Install]
WantedBy=multi-user.target
UNIT
  ln -sfn /etc/systemd/system/nda-network.service "$staging/etc/systemd/system/multi-user.target.wants/nda-network.service"
  # The hardware watchdog, as NixOS's systemd.watchdog sets it: systemd feeds it while it runs.
  mkdir -p "$staging/etc/systemd/system.conf.d"
  printf '[Manager]\nRuntimeWatchdogSec=30s\nRebootWatchdogSec=2min\n' >"$staging/etc/systemd/system.conf.d/nda-watchdog.conf"
  for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
    systemd-firstboot.service getty@tty1.service; do
    ln -sfn /dev/null "$staging/etc/systemd/system/$u"
  done
  # The boot partition is the testbed's (the fixture's boot loader writes only to such a /boot).
  mkdir -p "$staging/boot"
  touch "$staging/boot/.nda-testbed-boot"
  # The firmware partition, mounted as NixOS's SD image has it, and the one-shot boot's file on it
  # (what nixos/boot-trial.nix writes with bootOnce enabled).
  mkdir -p "$staging/boot/firmware" "$staging/etc/nix-deploy-action"
  echo '/dev/vda1 /boot/firmware vfat defaults,nofail 0 2' >>"$staging/etc/fstab"
  echo /boot/firmware/nix-deploy-once >"$staging/etc/nix-deploy-action/boot-once"
  # Generation 0, as the SD image has it: its closure, the system profile, the boot entry.
  mount -t proc proc "$staging/proc"
  # shellcheck disable=SC2046
  if ! nix-store --export $(nix-store -qR "$gen0") | chroot "$staging" nix-store --import >/dev/null ||
    ! chroot "$staging" nix-env -p /nix/var/nix/profiles/system --set "$gen0" ||
    ! chroot "$staging" "$gen0/bin/switch-to-configuration" boot >/dev/null; then
    umount "$staging/proc"
    log "could not install generation 0 into the base disk"
    return 1
  fi
  umount "$staging/proc"
  local part=$d/part.img firmware=$d/firmware.img
  rm -f "$part" "$firmware"
  mkfs.ext4 -q -F -L NIXOS_SD -d "$staging" "$part" 3G
  truncate -s 64M "$firmware"
  mkfs.vfat -n FIRMWARE "$firmware" >/dev/null
  # 1 MiB, the FAT partition (64 MiB), the root (3 GiB, bootable: what U-Boot's scan boots from).
  truncate -s 0 "$d/base.img.tmp"
  truncate -s $((3 * 1024 + 65))M "$d/base.img.tmp"
  printf 'start=2048, size=131072, type=c\nstart=133120, type=83, bootable\n' | sfdisk -q "$d/base.img.tmp" >/dev/null
  dd if="$firmware" of="$d/base.img.tmp" bs=1M seek=1 conv=sparse,notrunc status=none
  dd if="$part" of="$d/base.img.tmp" bs=1M seek=65 conv=sparse,notrunc status=none
  rm -f "$part" "$firmware"
  "$here/uboot-env.sh" "$d/uboot-env.base"
  rm -rf "$staging"
  mv "$d/base.img.tmp" "$d/base.img"
  echo "$stamp" >"$d/base.stamp"
}

# The LAN segment: the jump host (eth6, 10.99.12.1) -- bridge br0 in nda-bpi -- tap0 (the machine).
network() {
  ip netns list | grep -qw nda-bpi || ip netns add nda-bpi
  ip -n nda-bpi link set lo up
  ip -n nda-bpi link show br0 >/dev/null 2>&1 || ip -n nda-bpi link add br0 type bridge
  if ! ip -n nda-jump link show "$jump_if" >/dev/null 2>&1; then
    ip -n nda-bpi link del uplink 2>/dev/null || true
    ip -n nda-jump link add "$jump_if" type veth peer name uplink netns nda-bpi
  fi
  ip -n nda-bpi link set uplink master br0
  ip -n nda-bpi link show tap0 >/dev/null 2>&1 || ip -n nda-bpi tuntap add tap0 mode tap
  ip -n nda-bpi link set tap0 master br0
  for i in br0 uplink tap0; do ip -n nda-bpi link set "$i" up; done
  ip -n nda-jump addr replace "${addr%.2}.1/24" dev "$jump_if"
  ip -n nda-jump link set "$jump_if" up
}

start() {
  network
  if ! alive "$pidfile"; then
    [ -f "$d/disk.qcow2" ] || qemu-img create -q -f qcow2 -b "$d/base.img" -F raw "$d/disk.qcow2"
    [ -f "$d/uboot-env.img" ] || cp --sparse=always "$d/uboot-env.base" "$d/uboot-env.img"
    : >"$d/console.log"
    # -smp 2, 1 GiB: a Pi 3 has 4 cores and 1 GiB; this machine has 2 cores to emulate them with.
    ip netns exec nda-bpi qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 2 -m 1024 \
      -bios /usr/lib/u-boot/qemu_arm64/u-boot.bin -drive if=pflash,unit=1,format=raw,file="$d/uboot-env.img" \
      -drive if=none,file="$d/disk.qcow2",format=qcow2,id=hd0 -device virtio-blk-pci,drive=hd0 \
      -netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=n0,mac=52:54:00:99:12:02,romfile= \
      -device i6300esb -watchdog-action reset \
      -display none -chardev file,id=con,path="$d/console.log",append=on -serial chardev:con \
      -monitor "unix:$d/monitor.sock,server,nowait" -pidfile "$pidfile" -daemonize
  fi
  wait_ssh "${BPI_BOOT_SECONDS:-600}"
}

wait_ssh() {
  local until=$(($(date +%s) + $1))
  while [ "$(date +%s)" -lt "$until" ]; do
    if pi_ssh true 2>/dev/null; then return 0; fi
    alive "$pidfile" || { log "QEMU is not running"; break; }
    sleep 1
  done
  log "no SSH from $PI within $1 s; its console ends:"
  tail -20 "$d/console.log" >&2 || true
  return 1
}

stop() {
  local pid
  if pid=$(pid_of "$pidfile"); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  image) mkdir -p "$d"; base_disk ;;
  start) start ;;
  stop) stop ;;
  reset) stop; rm -f "$d/disk.qcow2" "$d/uboot-env.img"; base_disk; start ;;
  wait-ssh) wait_ssh "${2:?seconds}" ;;
  boots) grep -c '^U-Boot 20' "$d/console.log" || true ;;
  *) echo "usage: booting-pi.sh image | start | stop | reset | wait-ssh SECS | boots" >&2; exit 2 ;;
esac
