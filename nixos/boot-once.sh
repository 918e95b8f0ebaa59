#!/bin/sh
# The boot loader's side of nix-deploy-action's one-shot boot, for U-Boot (a Raspberry Pi's stock
# NixOS image: U-Boot reads extlinux.conf). extlinux has no one-shot entry, so the action makes the
# new system bootable once this way, while the previous one stays the default until the deploy
# confirms the new one: a kernel that panics (with panic=N on its command line), an initrd that
# cannot mount its root, or a hang that the watchdog ends are followed by a boot of the previous
# system, without hands.
#
# Before a reboot on trial the action writes FILE (nix-deploy-once at the root of the FAT partition
# U-Boot reads, e.g. /boot/firmware on a Pi) with the new system's boot entry, `nda_label=nixos-N`.
# The hook below runs first in U-Boot's bootcmd: when FILE is there and not empty, it reads the
# label, empties FILE (fatwrite of 0 bytes) and only when that worked sets pxe_label_override, which
# has U-Boot's extlinux boot that entry instead of the default; then it runs the board's bootcmd as
# before. Any failure boots the default, and an emptied FILE is never booted from twice.
#
# The hook lives in U-Boot's saved environment (on a Pi: uboot.env on the FAT partition). Install it
# once per machine with fw_setenv, after U-Boot saved its environment there at least once (`saveenv`
# at its prompt): fw_setenv cannot create a valid environment from nothing (an environment without
# the board's own variables would not boot).
#   boot-once.sh env DEVICE [BOOTCMD [INIT]]  print the variables (name=value: libubootenv's
#                                  fw_setenv -s script, and mkenvimage's input);
#                                  DEVICE the FAT partition as U-Boot names it (Pi: "mmc 0:1"),
#                                  BOOTCMD the board's own ("run distro_bootcmd"), INIT a command
#                                  that makes DEVICE readable first (QEMU virt: "virtio scan")
#   boot-once.sh install DEVICE [INIT]  set them with fw_setenv, keeping the board's bootcmd as
#                                  nda_bootcmd (run again, it keeps the one it kept)
set -eu
hook() {
  printf 'nda_once_dev=%s\n' "$1"
  printf 'nda_once_init=%s\n' "${3:-true}"
  printf 'nda_bootcmd=%s\n' "$2"
  # shellcheck disable=SC2016 # U-Boot's variables, expanded by U-Boot when the hook runs
  printf 'nda_once=%s\n' 'run nda_once_init; if load ${nda_once_dev} ${scriptaddr} nix-deploy-once && test ${filesize} != 0; then env import -t ${scriptaddr} ${filesize} nda_label && fatwrite ${nda_once_dev} ${scriptaddr} nix-deploy-once 0 && setenv pxe_label_override ${nda_label}; fi'
  printf 'bootcmd=%s\n' 'run nda_once; run nda_bootcmd'
}
case "${1:-}" in
  env) hook "${2:?DEVICE}" "${3:-run distro_bootcmd}" "${4:-}" ;;
  install)
    current=$(fw_printenv -n bootcmd) || { echo "boot-once: fw_printenv cannot read U-Boot's environment: save it from U-Boot once (saveenv), and check /etc/fw_env.config" >&2; exit 1; }
    if [ "$current" = 'run nda_once; run nda_bootcmd' ]; then current=$(fw_printenv -n nda_bootcmd); fi
    [ -n "$current" ] || { echo "boot-once: U-Boot's environment has no bootcmd to keep: not installing" >&2; exit 1; }
    hook "${2:?DEVICE}" "$current" "${3:-}" | fw_setenv -s -
    # What U-Boot will read: checked, not assumed (a tool that skipped a line would leave it out).
    if ! { [ "$(fw_printenv -n bootcmd)" = 'run nda_once; run nda_bootcmd' ] &&
      [ "$(fw_printenv -n nda_bootcmd)" = "$current" ]; }; then
      echo "boot-once: fw_setenv did not write the hook (fw_printenv shows bootcmd=$(fw_printenv -n bootcmd))" >&2
      exit 1
    fi
    echo "boot-once: installed (the board's bootcmd kept as nda_bootcmd: $current)" ;;
  *) echo "usage: boot-once.sh env DEVICE [BOOTCMD [INIT]] | install DEVICE [INIT]" >&2; exit 2 ;;
esac
