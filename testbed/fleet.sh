#!/usr/bin/env bash
# A fleet of light simulated Pis for the scale tests and the bench's fleet row: N Pis (pf1..pfN)
# like pi and pi2 (sshd in a network namespace of its own, a private /nix, /run, /root and /boot;
# no systemd: twelve systemd containers do not fit two cores), all on one bridge behind the jump
# host, at 10.99.10.11..(10+N). They share pi's host key and authorized keys. Run testbed/setup.sh
# first.
#   fleet.sh up N      start pf1..pfN (those already up are kept), each with fixture generation 0;
#                      writes $TESTBED/fleet/env: FLEET_HOSTS (space-separated addresses),
#                      FLEET_KNOWN_HOSTS (a known_hosts file for the jump host and every fleet Pi)
#   fleet.sh exec I CMD...   run CMD inside pfI
#   fleet.sh down      stop every fleet Pi (by the pids of its network namespace) and remove it
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=testbed/seed.sh
. "$here/seed.sh"
# shellcheck source=testbed/netns.sh
. "$here/netns.sh"
TESTBED=${TESTBED:-/var/lib/nda-testbed}
export NIX_CONFIG=$'substituters =\nextra-platforms = aarch64-linux'
FLEET=$TESTBED/fleet
MAX=40
k=$TESTBED/keys

addr() { echo "10.99.10.$((10 + $1))"; }
# shellcheck source=testbed/pidfile.sh
. "$here/pidfile.sh"

# Used by install_generation0 (seed.sh): a command inside the fleet Pi $PI.
pi_exec() {
  local pid
  pid=$(pid_of "$FLEET/$PI/run/sshd-pi.pid") || { echo "fleet.sh: $PI is not running" >&2; return 1; }
  nsenter -t "$pid" -m -n -- "$@"
}

up_one() {
  local i=$1 name="pf$1" dir="$FLEET/pf$1"
  ip netns list | grep -qw "nda-$name" || ip netns add "nda-$name"
  ip -n "nda-$name" link set lo up
  if ! ip -n nda-jump link show "f$i" >/dev/null 2>&1; then
    ip -n "nda-$name" link del eth0 2>/dev/null || true
    ip -n nda-jump link add "f$i" type veth peer name eth0 netns "nda-$name"
  fi
  ip -n nda-jump link set "f$i" master fbr up
  ip -n "nda-$name" addr replace "$(addr "$i")/24" dev eth0
  ip -n "nda-$name" link set eth0 up
  ip -n "nda-$name" route replace default via 10.99.10.1
  mkdir -p "$dir/nix" "$dir/run" "$dir/root" "$dir/boot"
  mountpoint -q "$dir/nix" || mount -t tmpfs -o size=256m,mode=0755 tmpfs "$dir/nix"
  if ! mountpoint -q "$dir/boot"; then
    mount -t tmpfs -o size=16m,mode=0755 tmpfs "$dir/boot"
    touch "$dir/boot/.nda-testbed-boot"
  fi
  sed -e "s|^PidFile .*|PidFile /run/sshd-pi.pid|" "$TESTBED/pi/sshd_config" >"$dir/sshd_config"
  if ! alive "$dir/run/sshd-pi.pid"; then
    mkdir -p "$dir/nix/store" "$dir/nix/var/nix"
    ip netns exec "nda-$name" unshare --mount --propagation private sh -c '
      mount --bind "$1/nix" /nix && mount --bind "$1/run" /run && mount --bind "$1/root" /root &&
      mount --bind "$1/boot" /boot && mkdir -p /run/sshd &&
      exec /usr/sbin/sshd -f "$1/sshd_config"' sh "$dir"
    for _ in $(seq 50); do alive "$dir/run/sshd-pi.pid" && break; sleep 0.1; done
  fi
  if ! PI=$name pi_exec test -e /run/current-system/nixos-version; then
    PI=$name install_generation0 fleet.sh >/dev/null
  fi
}

up() {
  local n=$1 i hosts=''
  case $n in '' | *[!0-9]*) echo "fleet.sh up: N must be a number" >&2; exit 2 ;; esac
  if [ "$n" -lt 1 ] || [ "$n" -gt $MAX ]; then echo "fleet.sh up: N from 1 to $MAX" >&2; exit 2; fi
  mkdir -p "$FLEET"
  ip -n nda-jump link show fbr >/dev/null 2>&1 || ip -n nda-jump link add fbr type bridge
  ip -n nda-jump addr replace 10.99.10.1/24 dev fbr
  ip -n nda-jump link set fbr up
  for i in $(seq "$n"); do
    up_one "$i"
    hosts="$hosts $(addr "$i")"
  done
  hosts=${hosts# }
  {
    cat "$TESTBED/known_hosts"
    echo "${hosts// /,} $(cut -d' ' -f1,2 "$k/pi_host_ed25519.pub")"
  } >"$FLEET/known_hosts"
  printf 'FLEET_HOSTS="%s"\nFLEET_KNOWN_HOSTS=%s\n' "$hosts" "$FLEET/known_hosts" >"$FLEET/env"
  echo "fleet.sh: $n Pis up ($hosts)"
}

down_one() {
  local name=$1 dir="$FLEET/$1"
  end_netns_processes "nda-$name"
  for m in nix boot; do if mountpoint -q "$dir/$m"; then umount -l "$dir/$m"; fi; done
  ip netns del "nda-$name" 2>/dev/null || true
  rm -rf "${dir:?}"
}

down() {
  local d
  if [ -d "$FLEET" ]; then
    for d in "$FLEET"/pf*; do [ -d "$d" ] && down_one "$(basename "$d")"; done
  fi
  ip -n nda-jump link del fbr 2>/dev/null || true
  rm -rf "${FLEET:?}"
}

case "${1:-}" in
  up) up "${2:-}" ;;
  exec) i=${2:?fleet.sh exec I CMD}; shift 2; PI=pf$i pi_exec "$@" ;;
  down) down ;;
  *) echo "usage: fleet.sh up N | exec I CMD... | down" >&2; exit 2 ;;
esac
