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
}
