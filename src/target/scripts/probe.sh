# What the target runs and has, as key=value lines (parseRemoteState reads them). Sourced.
# shellcheck shell=sh
probe_state() {
  printf 'current=%s\n' "$(readlink -f /run/current-system 2>/dev/null)"
  printf 'profile=%s\n' "$(readlink -f /nix/var/nix/profiles/system 2>/dev/null)"
  printf 'profile-link=%s\n' "$(readlink /nix/var/nix/profiles/system 2>/dev/null)"
  printf 'platform=%s\n' "$(cat /run/current-system/system 2>/dev/null)"
  printf 'uid=%s\n' "$(id -u)"
  printf 'nix-store=%s\n' "$(command -v nix-store)"
  printf 'nix-free-kb=%s\n' "$(df -Pk /nix/store 2>/dev/null | awk 'NR==2 {print $4}')"
  # /boot (a Pi's small firmware partition): its free space and the files boot loaders put there.
  printf 'boot-free-kb=%s\n' "$(df -Pk /boot 2>/dev/null | awk 'NR==2 {print $4}')"
  printf 'boot-files=%s\n' "$(find /boot -xdev -maxdepth 3 -type f 2>/dev/null | sed 's|.*/||' | tr '\n' ' ')"
  printf 'boot-id=%s\n' "$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)"
  # What it booted (NixOS's stage 2 links /run/booted-system): whether a new system needs a reboot.
  printf 'booted=%s\n' "$(readlink -f /run/booted-system 2>/dev/null)"
  printf 'booted-kernel=%s\n' "$(readlink -f /run/booted-system/kernel 2>/dev/null)"
  printf 'booted-initrd=%s\n' "$(readlink -f /run/booted-system/initrd 2>/dev/null)"
  printf 'booted-kernel-modules=%s\n' "$(readlink -f /run/booted-system/kernel-modules 2>/dev/null)"
  printf 'booted-kernel-params=%s\n' "$({ tr '\n' ' ' </run/booted-system/kernel-params; } 2>/dev/null)"
  # The boot loader's one-shot file (nixos/boot-trial.nix's bootOnce), when its file system is mounted.
  o='' && { IFS= read -r o </etc/nix-deploy-action/boot-once; } 2>/dev/null && mountpoint -q "${o%/*}" 2>/dev/null || o=''
  printf 'boot-once=%s\n' "$o"
  # The last deploy plan's record here (record.sh): its keys prefixed, so none can pose as another.
  if [ -f /nix/var/nix-deploy-action/plan-record ]; then
    while IFS= read -r l; do printf 'plan-%s\n' "$l"; done </nix/var/nix-deploy-action/plan-record
  fi
  # A boot trial still pending (nixos/boot-trial.sh): before the deploy's login, or after it.
  for t in boot-trial:pending boot-trial.reached:reached; do
    f=/nix/var/nix-deploy-action/${t%%:*}
    [ -f "$f" ] || continue
    printf 'trial=%s\n' "${t#*:}"
    while IFS= read -r l; do
      case $l in new=* | previous=* | previous-generation=* | confirm-seconds=* | login-seconds=*) printf 'trial-%s\n' "$l" ;; esac
    done <"$f"
    break
  done
}
