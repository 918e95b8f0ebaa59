#!/usr/bin/env bash
# A simulated Pi that boots systemd as PID 1: a systemd-nspawn container in its own network
# namespace (nda-$PI), behind the jump host, over its own overlay of the shared trixie root file
# system (rootfs.sh), with a private, size-limited /nix and /boot bound in (they persist across its
# reboots, as a Pi's SD card does). Inside: systemd 257, logind with KillUserProcesses=yes (a
# detached activation must really be detached), OpenSSH through PAM, Nix 2.26 and its nix-daemon,
# and a NixOS stage-2 stand-in that points /run/current-system at the boot entry's system at boot.
# A reboot inside the container ends systemd-nspawn with status 133: the supervisor starts it again,
# like a board coming back.
#
# PI=spi (default), spi2 or spi3. Everything it starts is recorded by pid under $TESTBED/$PI/ and ended by pid.
#   systemd-pi.sh start          boot it (idempotent) and wait until sshd runs; seed generation 0
#   systemd-pi.sh stop           power it off (SIGTERM to nspawn: an orderly shutdown), then by pid
#   systemd-pi.sh reset          power it off (a power cut: its processes killed), wipe its /nix,
#                                /boot and overlay, start again (generation 0)
#   systemd-pi.sh power-cut      a power cut and the power back: its processes killed, /run gone,
#                                /nix, /boot and its root kept; boots its boot entry (waits for sshd)
#   systemd-pi.sh exec CMD...    run CMD inside it (all its namespaces; PID 1 is its systemd)
#   systemd-pi.sh init-pid       print the pid (in this machine's namespace) of its systemd
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=testbed/seed.sh
. "$here/seed.sh"
# shellcheck source=testbed/pi-os.sh
. "$here/pi-os.sh"
TESTBED=${TESTBED:-/var/lib/nda-testbed}
PI=${PI:-spi}
# Each on a link of its own from the jump host (the jump host's end: jump_if, .1 of its /24). spi
# also has a direct link from the runner (10.99.8.0/24, a self-hosted runner on its LAN); spi2,
# the second systemd Pi (a fleet of two for the canary and rollback-fleet tests), has none.
case "$PI" in
  spi) addr=10.99.5.2 jump_if=eth3 direct=yes ;;
  spi2) addr=10.99.11.2 jump_if=eth5 direct=no ;;
  # The safety lane's systemd Pi (scripts/test.sh), behind the jump host only.
  spi3) addr=10.99.14.2 jump_if=eth8 direct=no ;;
  *) echo "systemd-pi.sh: PI must be spi, spi2 or spi3" >&2; exit 2 ;;
esac
jump_addr=${addr%.2}.1
PI_NIX_SIZE=${PI_NIX_SIZE:-1g}
PI_BOOT_SIZE=${PI_BOOT_SIZE:-64m}
d="$TESTBED/$PI"
k="$TESTBED/keys"
supervisor_pidfile="$d/supervisor.pid"
export NIX_CONFIG=$'substituters =\nextra-platforms = aarch64-linux'

# shellcheck source=testbed/pidfile.sh
. "$here/pidfile.sh"
children() { cat "/proc/$1/task/$1/children" 2>/dev/null || true; }

# The container's systemd: the child of systemd-nspawn, the child of the supervisor.
init_pid() {
  local sup nspawn init
  sup=$(pid_of "$supervisor_pidfile") || return 1
  nspawn=$(children "$sup" | awk '{print $1}')
  [ -n "$nspawn" ] || return 1
  init=$(children "$nspawn" | awk '{print $1}')
  [ -n "$init" ] || return 1
  echo "$init"
}

pi_exec() {
  local init
  init=$(init_pid) || { echo "systemd-pi.sh: $PI is not running" >&2; return 1; }
  nsenter -t "$init" -a -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root "$@"
}

mounts() {
  mkdir -p "$d"/{nix,boot,upper,work,root}
  mountpoint -q "$d/nix" || mount -t tmpfs -o size="$PI_NIX_SIZE",mode=0755 tmpfs "$d/nix"
  # A Pi's firmware partition is small: /boot fills up when it keeps too many kernels.
  if ! mountpoint -q "$d/boot"; then
    mount -t tmpfs -o size="$PI_BOOT_SIZE",mode=0755 tmpfs "$d/boot"
    # The fixture's boot loader writes only to a /boot marked as the testbed's.
    touch "$d/boot/.nda-testbed-boot"
  fi
  if ! mountpoint -q "$d/root"; then
    local rootfs
    rootfs=$("$here/rootfs.sh")
    mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$d/upper,workdir=$d/work" "$d/root"
  fi
}

network() {
  ip netns list | grep -qw "nda-$PI" || ip netns add "nda-$PI"
  ip -n "nda-$PI" link set lo up
  if ! ip -n nda-jump link show "$jump_if" >/dev/null 2>&1; then
    ip -n "nda-$PI" link del eth0 2>/dev/null || true
    ip -n nda-jump link add "$jump_if" type veth peer name eth0 netns "nda-$PI"
  fi
  ip -n nda-jump addr replace "$jump_addr/24" dev "$jump_if"
  ip -n nda-jump link set "$jump_if" up
  ip -n "nda-$PI" addr replace "$addr/24" dev eth0
  ip -n "nda-$PI" link set eth0 up
  [ "$direct" = yes ] || return 0
  # A direct link from the runner, as a self-hosted runner on the Pi's LAN has (10.99.8.0/24).
  if ! ip link show nda-spi0 >/dev/null 2>&1; then
    ip -n "nda-$PI" link del eth1 2>/dev/null || true
    ip link add nda-spi0 type veth peer name eth1 netns "nda-$PI"
  fi
  ip addr replace 10.99.8.1/24 dev nda-spi0
  ip link set nda-spi0 up
  ip -n "nda-$PI" addr replace 10.99.8.2/24 dev eth1
  ip -n "nda-$PI" link set eth1 up
}

start() {
  network # idempotent: also repairs the links of a running container
  if alive "$supervisor_pidfile"; then wait_ready; return; fi
  mounts
  configure "$d/root"
  configure_deploy_user "$d/root" "$here/.."
  # The supervisor: boots the container again when it rebooted itself (nspawn exits 133).
  # SYSTEMD_NSPAWN_UNIFIED_HIERARCHY: systemd 257 cannot start units on this host's hybrid cgroups.
  # --keep-unit --register=no: there is no machined (nor system bus) on the host to register with.
  # CAP_NET_ADMIN: the network namespace is its own; its root may bring links up and down, as a
  # Pi's root can (a generation that takes the network down must really do it).
  # systemd-nspawn starts in a cgroup of its own ($cgroup, empty but for it): with --keep-unit it
  # puts the container into "payload" beside its own cgroup, so containers started from one cgroup
  # shared one tree -- spi's systemd saw spi2's user@0.service as its own, and a login or a reboot
  # waited, up to minutes, for a unit another container kept running.
  local cgroup
  cgroup=$(container_cgroup)
  setsid bash -c '
    while :; do
      (
        if [ -n "$4" ] && ! { mkdir -p "$4" && echo "$BASHPID" >"$4/cgroup.procs"; }; then
          echo "nda: could not start in the cgroup $4: this container shares its cgroup tree"
        fi
        SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 exec systemd-nspawn --quiet --console=passive \
          -D "$1" -M "$2" --keep-unit --register=no --network-namespace-path="/run/netns/nda-$2" \
          --bind="$3/nix:/nix" --bind="$3/boot:/boot" --capability=CAP_NET_ADMIN -b systemd.firstboot=off
      )
      rc=$?
      echo "nda: container exited with status $rc at $(date +%s)"
      [ "$rc" = 133 ] || exit "$rc"
      echo "$(date +%s)" >>"$3/reboots"
    done' bash "$d/root" "$PI" "$d" "$cgroup" </dev/null >>"$d/console.log" 2>&1 &
  echo $! >"$supervisor_pidfile"
  wait_ready
  seed_if_empty
}

# The container's own cgroup in the cgroup2 hierarchy (hybrid hosts mount it at /sys/fs/cgroup/unified),
# a child of its root: systemd-nspawn starts in it, then makes supervisor/ and payload/ under it.
container_cgroup() {
  local m
  for m in /sys/fs/cgroup/unified /sys/fs/cgroup; do
    if [ "$(stat -f -c %T "$m" 2>/dev/null)" = cgroup2fs ]; then
      echo "$m/nda-$PI"
      return
    fi
  done
}

# Until sshd runs (60 s, then fail loudly): sshd starts after the booted system's units were
# started (nda-boot-units). "starting" counts too: a system whose unit waits for a deployment key
# (deployment.keys) stays "starting" until a deploy uploads the key, as on NixOS.
wait_ready() {
  local state
  for _ in $(seq 120); do
    state=$(pi_exec systemctl is-system-running 2>/dev/null || true)
    case "$state" in
      running|degraded|starting)
        if pi_exec systemctl is-active --quiet ssh.service; then return 0; fi ;;
    esac
    alive "$supervisor_pidfile" || break
    sleep 0.5
  done
  echo "systemd-pi.sh: $PI did not boot (state: ${state:-none}); its console:" >&2
  tail -30 "$d/console.log" >&2 || true
  return 1
}

seed_if_empty() {
  if pi_exec test -e /nix/var/nix/profiles/system; then return 0; fi
  install_generation0 systemd-pi.sh
}

# stop: an orderly shutdown. stop hard: the power cut, for a reset that wipes the Pi anyway (an
# orderly shutdown is not needed on every test's reset).
stop() {
  local sup nspawn init p
  if sup=$(pid_of "$supervisor_pidfile"); then
    nspawn=$(children "$sup" | awk '{print $1}')
    init=$(init_pid || true)
    # The supervisor first, so it does not boot the container again.
    kill "$sup" 2>/dev/null || true
    if [ -n "$nspawn" ]; then
      if [ "${1:-}" = hard ] && [ -n "$init" ]; then
        # SIGKILL to the container's PID 1: the kernel ends every process of its PID namespace,
        # and systemd-nspawn exits.
        kill -9 "$init" 2>/dev/null || true
      else
        # SIGTERM makes systemd-nspawn shut the container down in order.
        kill "$nspawn" 2>/dev/null || true
      fi
      # Give it 20 s.
      for _ in $(seq 100); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$nspawn" 2>/dev/null || true
    fi
  fi
  rm -f "$supervisor_pidfile"
  # Whatever still runs in its network namespace is its own: end exactly that, by pid.
  p=$(ip netns pids "nda-$PI" 2>/dev/null | tr '\n' ' ')
  # shellcheck disable=SC2086
  [ -z "$p" ] || kill -9 $p 2>/dev/null || true
  # Whatever is left in its cgroup tree is its own too (a process outside its network namespace
  # included): killed, waited for (5 s), then the tree removed; the next start makes it again.
  local cgroup
  cgroup=$(container_cgroup)
  if [ -n "$cgroup" ] && [ -d "$cgroup" ]; then
    [ ! -e "$cgroup/cgroup.kill" ] || echo 1 >"$cgroup/cgroup.kill" 2>/dev/null || true
    for _ in $(seq 50); do grep -qx 'populated 0' "$cgroup/cgroup.events" 2>/dev/null && break; sleep 0.1; done
    find "$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null || true
  fi
}

wipe() {
  local m
  for m in root nix boot; do
    if mountpoint -q "$d/$m"; then umount -l "$d/$m"; fi
  done
  rm -rf "${d:?}/upper" "${d:?}/work" "${d:?}/reboots" "${d:?}/console.log"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  reset) stop hard; wipe; start ;;
  power-cut) stop hard; start ;;
  exec) shift; pi_exec "$@" ;;
  init-pid) init_pid ;;
  *) echo "usage: systemd-pi.sh start | stop | reset | power-cut | exec CMD... | init-pid" >&2; exit 2 ;;
esac
