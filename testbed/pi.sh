#!/usr/bin/env bash
# Operates a simulated Pi from the host side, outside SSH (so it works whatever the action did).
# PI=pi (default), pi2 or pi3 chooses which.
#   pi.sh exec CMD...     run CMD inside the Pi's mount and network namespaces
#   pi.sh seed-if-empty   install fixture generation 0 when the Pi has no system yet
#   pi.sh start           mount the Pi's private /nix, /boot and /run and start its sshd (setup.sh)
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
case "$PI" in pi|pi2|pi3) ;; *) echo "pi.sh: PI must be pi, pi2 or pi3" >&2; exit 2 ;; esac
pidfile="$TESTBED/$PI/run/sshd-pi.pid"

pi_exec() {
  local pid
  pid=$(pid_of "$pidfile") || { echo "pi.sh: the Pi is not running (no live $pidfile)" >&2; return 1; }
  nsenter -t "$pid" -m -n -- "$@"
}

stop() {
  end_netns_processes "nda-$PI"
  rm -f "$pidfile"
  if mountpoint -q "$TESTBED/$PI/nix"; then umount -l "$TESTBED/$PI/nix"; fi
  if mountpoint -q "$TESTBED/$PI/boot"; then umount -l "$TESTBED/$PI/boot"; fi
  rm -rf "${TESTBED:?}/$PI/run" && mkdir -p "$TESTBED/$PI/run"
}

# shellcheck source=testbed/pidfile.sh
. "$here/pidfile.sh"

# The Pi: private /nix (tmpfs, size-limited like an SD card), /boot (a small firmware partition,
# marked as the testbed's: the fixture's boot loader writes nowhere else) and /run, and its sshd.
# Its namespace, sshd_config and keys are setup.sh's.
start() {
  ip netns list | grep -qw "nda-$PI" || { echo "pi.sh: no namespace nda-$PI: run testbed/setup.sh" >&2; return 1; }
  mkdir -p "$TESTBED/$PI/nix"
  if ! mountpoint -q "$TESTBED/$PI/nix"; then
    mount -t tmpfs -o size="${PI_NIX_SIZE:-1g}",mode=0755 tmpfs "$TESTBED/$PI/nix"
  fi
  mkdir -p "$TESTBED/$PI/boot" "$TESTBED/$PI/run"
  if ! mountpoint -q "$TESTBED/$PI/boot"; then
    mount -t tmpfs -o size="${PI_BOOT_SIZE:-64m}",mode=0755 tmpfs "$TESTBED/$PI/boot"
    touch "$TESTBED/$PI/boot/.nda-testbed-boot"
  fi
  # A test may have taken the Pi's links down (a system that breaks its network): a fresh Pi has them up.
  local dev
  for dev in $(ip -n "nda-$PI" -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'); do
    ip -n "nda-$PI" link set "$dev" up
  done
  alive "$pidfile" && return 0
  echo "testbed: starting $PI's sshd"
  mkdir -p "$TESTBED/$PI/nix/store" "$TESTBED/$PI/nix/var/nix" "$TESTBED/$PI/root"
  # root's home is the Pi's own, empty as on a fresh NixOS: this machine's dotfiles (a ~/.bashrc
  # that runs pyenv init, say) must not run on every SSH command as if they were the Pi's.
  # shellcheck disable=SC2016 # expanded by the inner sh, from its arguments
  ip netns exec "nda-$PI" unshare --mount --propagation private sh -c '
    mount --bind "$1/$2/nix" /nix && mount --bind "$1/$2/run" /run && mount --bind "$1/$2/root" /root &&
    mount --bind "$1/$2/boot" /boot &&
    mkdir -p /run/sshd &&
    exec /usr/sbin/sshd -f "$1/$2/sshd_config"' sh "$TESTBED" "$PI"
  for _ in $(seq 50); do alive "$pidfile" && return 0; sleep 0.1; done
  echo "pi.sh: $PI's sshd did not start" >&2
  return 1
}

seed_if_empty() {
  if pi_exec test -e /run/current-system/nixos-version; then return 0; fi
  install_generation0 pi.sh
}

case "${1:-}" in
  exec) shift; pi_exec "$@" ;;
  start) start ;;
  seed-if-empty) seed_if_empty ;;
  # Only this Pi: the rest of the testbed (setup.sh) is left as it is.
  reset) stop; start; install_generation0 pi.sh ;;
  stop) stop ;;
  *) echo "usage: pi.sh exec CMD... | start | seed-if-empty | reset | stop" >&2; exit 2 ;;
esac
