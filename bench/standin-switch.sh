#!/bin/sh
# The bench's stand-in for a small change deployed with plain tools, as nixos-rebuild --target-host
# does it: evaluate the toplevel (already built), copy its closure with nix-copy-closure and switch,
# all over one OpenSSH ControlMaster connection through the jump host. No lock, no rollback.
# usage: standin-switch.sh FLAKE_ATTR SSH_HOST   (SSH_CONFIG: an ssh_config naming SSH_HOST)
set -eu
top=$(nix --extra-experimental-features 'nix-command flakes' eval --raw "$1.outPath")
dir=$(mktemp -d)
trap 'ssh -F "$SSH_CONFIG" -o ControlPath="$dir/c" -O exit "$2" 2>/dev/null; rm -rf "$dir"' EXIT
ssh -F "$SSH_CONFIG" -o ControlMaster=yes -o ControlPath="$dir/c" -o ControlPersist=60 -fN "$2"
NIX_SSHOPTS="-F $SSH_CONFIG -o ControlPath=$dir/c" nix-copy-closure --to "$2" "$top"
ssh -F "$SSH_CONFIG" -o ControlPath="$dir/c" "$2" \
  "nix-env -p /nix/var/nix/profiles/system --set '$top' && '$top/bin/switch-to-configuration' switch"
