#!/bin/sh
# The bench's stand-in for a no-op redeploy with plain tools: evaluate the system's toplevel, then
# one fresh OpenSSH connection through the jump host reads what the target runs. Prints unchanged or
# changed. usage: standin-noop.sh FLAKE_ATTR SSH_HOST   (SSH_CONFIG: an ssh_config naming SSH_HOST)
set -eu
top=$(nix --extra-experimental-features 'nix-command flakes' eval --raw "$1.outPath")
current=$(ssh -F "$SSH_CONFIG" "$2" readlink /run/current-system)
if [ "$top" = "$current" ]; then echo unchanged; else echo changed; fi
