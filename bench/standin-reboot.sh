#!/bin/sh
# The bench's stand-in for a kernel update with plain tools, as `nixos-rebuild boot --target-host`
# and a reboot over SSH do it: copy the closure, set the profile and the boot entry, reboot, then
# look for the target every half second until it answers from another boot. No trial, no lock,
# no checks. Prints the seconds from the reboot command to that answer.
# usage: standin-reboot.sh FLAKE_ATTR SSH_HOST   (SSH_CONFIG: an ssh_config naming SSH_HOST)
set -eu
top=$(nix --extra-experimental-features 'nix-command flakes' eval --raw "$1.outPath")
ssh_() { ssh -F "$SSH_CONFIG" -o ConnectTimeout=3 "$@"; }
NIX_SSHOPTS="-F $SSH_CONFIG" nix-copy-closure --to "$2" "$top"
before=$(ssh_ "$2" cat /proc/sys/kernel/random/boot_id)
ssh_ "$2" "nix-env -p /nix/var/nix/profiles/system --set '$top' && '$top/bin/switch-to-configuration' boot >/dev/null &&
  systemd-run --on-active=2 --quiet --collect systemctl reboot"
start=$(date +%s.%N)
while :; do
  now=$(ssh_ "$2" cat /proc/sys/kernel/random/boot_id 2>/dev/null || true)
  if [ -n "$now" ] && [ "$now" != "$before" ]; then break; fi
  sleep 0.5
done
awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", b - a }'
