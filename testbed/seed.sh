# shellcheck shell=bash
# Installs fixture generation 0 on a Pi, as its SD image would have it: the closure imported, the
# system profile set, the system activated and booted (/run/booted-system, as NixOS's stage 2
# links it). Sourced by pi.sh and systemd-pi.sh, which define pi_exec (a command inside that Pi).
# usage: install_generation0 WHO   (WHO names the Pi in the message)
install_generation0() {
  echo "$1: installing fixture generation 0 on $PI"
  local attr="path:$TESTBED/fixture#nixosConfigurations.pi-gen0.config.system.build.toplevel" out
  # Evaluated once per fixture (setup.sh removes the cache when it copies the fixture): a reset
  # only imports it.
  out=$(cat "$TESTBED/gen0.out" 2>/dev/null || true)
  if [ -z "$out" ] || ! nix-store --check-validity "$out" 2>/dev/null; then
    nix --extra-experimental-features 'nix-command flakes' build --no-link "$attr"
    out=$(nix --extra-experimental-features 'nix-command flakes' eval --raw "$attr.outPath")
    echo "$out" >"$TESTBED/gen0.out.tmp" && mv -f "$TESTBED/gen0.out.tmp" "$TESTBED/gen0.out"
  fi
  # shellcheck disable=SC2046
  nix-store --export $(nix-store -qR "$out") | pi_exec nix-store --import >/dev/null
  pi_exec nix-env -p /nix/var/nix/profiles/system --set "$out"
  pi_exec "$out/bin/switch-to-configuration" switch >/dev/null
  pi_exec ln -sfn "$out" /run/booted-system
}
