#!/usr/bin/env bash
# Operates a simulated Pi from the host side, outside SSH (so it works whatever the action did).
# PI=pi (default) or PI=pi2 chooses which.
#   pi.sh exec CMD...     run CMD inside the Pi's mount and network namespaces
#   pi.sh seed-if-empty   install fixture generation 0 when the Pi has no system yet
#   pi.sh reset           wipe the Pi (store, profiles, /run) and bring it back with generation 0
#   pi.sh stop            stop the Pi's sshd and unmount its store
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=testbed/seed.sh
. "$here/seed.sh"
# shellcheck source=testbed/netns.sh
. "$here/netns.sh"
TESTBED=${TESTBED:-/var/lib/nda-testbed}
export NIX_CONFIG=$'substituters =\nextra-platforms = aarch64-linux'
PI=${PI:-pi}
case "$PI" in pi|pi2) ;; *) echo "pi.sh: PI must be pi or pi2" >&2; exit 2 ;; esac
pidfile="$TESTBED/$PI/run/sshd-pi.pid"

pi_exec() {
  local pid
  pid=$(cat "$pidfile" 2>/dev/null) || { echo "pi.sh: the Pi is not running (no $pidfile)" >&2; return 1; }
  nsenter -t "$pid" -m -n -- "$@"
}

stop() {
  end_netns_processes "nda-$PI"
  rm -f "$pidfile"
  if mountpoint -q "$TESTBED/$PI/nix"; then umount -l "$TESTBED/$PI/nix"; fi
  if mountpoint -q "$TESTBED/$PI/boot"; then umount -l "$TESTBED/$PI/boot"; fi
  rm -rf "${TESTBED:?}/$PI/run" && mkdir -p "$TESTBED/$PI/run"
}

seed_if_empty() {
  if pi_exec test -e /run/current-system/nixos-version; then return 0; fi
  install_generation0 pi.sh
}

case "${1:-}" in
  exec) shift; pi_exec "$@" ;;
  seed-if-empty) seed_if_empty ;;
  reset) stop; "$here/setup.sh" ;;
  stop) stop ;;
  *) echo "usage: pi.sh exec CMD... | seed-if-empty | reset | stop" >&2; exit 2 ;;
esac
