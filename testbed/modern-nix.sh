#!/usr/bin/env bash
# The runner's side on a modern Nix (issue #20), as cachix/install-nix-action leaves a GitHub-hosted
# runner: Nix 2.26 (Debian trixie's nix-bin, from the root file system rootfs.sh builds) with a
# nix-daemon run by root, its sandbox on, flakes enabled in nix.conf, and the action run by an
# unprivileged user: nda-runner is in trusted-users (install-nix-action's `trusted-users = root
# runner`), nda-untrusted is not.
#
# The runner's /nix is shared with Debian's Nix 2.8 (both use store schema 10; 2.8 reads what 2.26
# wrote). What is the modern Nix's own: its nix.conf ($TESTBED/modern/etc), its daemon (socket
# under /nix/var/nix/daemon-socket-modern, so 2.8's daemon tests keep the default socket) and
# its programs ($TESTBED/modern/bin on PATH). Those are trixie's `nix` with its ELF interpreter and
# library path pointed at the trixie root file system (patchelf), so it runs on this bookworm host
# with the caller's uid (a chroot run as root would make every client root) and /proc/self/exe is
# Nix itself (the daemon starts its build hook as `<self> __build-remote`). The small wrappers set
# only what a multi-user install has in /etc: where nix.conf is, and that clients use the daemon.
#
#   modern-nix.sh up      build $TESTBED/modern if missing or stale, start the daemon (idempotent)
#   modern-nix.sh down    stop the daemon, by the pid recorded when it started
#   modern-nix.sh restart down, then up (after a change to etc/local.conf)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TESTBED=${TESTBED:-/var/lib/nda-testbed}
M=$TESTBED/modern
SOCKET_DIR=/nix/var/nix/daemon-socket-modern
log() { echo "modern-nix: $*"; }

daemon_pid() {
  local pid
  pid=$(cat "$M/daemon.pid" 2>/dev/null) || return 1
  # Ours only if it still runs our binary (a pid can be reused by anything once ours has ended).
  [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$M/nix" ] && echo "$pid"
}

down() {
  local pid
  if pid=$(daemon_pid); then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$M/daemon.pid" "$SOCKET_DIR/socket"
}

up() {
  [ "$(id -u)" = 0 ] || { echo "modern-nix: needs root (a nix-daemon)" >&2; exit 1; }
  command -v patchelf >/dev/null || { echo "modern-nix: needs patchelf (scripts/install-deps.sh)" >&2; exit 1; }
  # Debian's Nix 2.26 puts /bin/sh=/usr/bin/bash-static in every sandbox (its default sandbox-paths).
  [ -x /usr/bin/bash-static ] || { echo "modern-nix: needs bash-static (scripts/install-deps.sh)" >&2; exit 1; }
  local rootfs stamp
  rootfs=$("$here/rootfs.sh")
  stamp="$(cat "$rootfs/usr/bin/nix" "$0" | sha256sum | cut -c1-16)"
  if [ "$(cat "$M/.stamp" 2>/dev/null)" != "$stamp" ]; then
    down
    log "building $M from $rootfs"
    rm -rf "$M"
    mkdir -p "$M/bin" "$M/etc" "$M/home"
    cp "$rootfs/usr/bin/nix" "$M/nix"
    patchelf --set-interpreter "$rootfs/lib64/ld-linux-x86-64.so.2" \
      --force-rpath --set-rpath "$rootfs/usr/lib/x86_64-linux-gnu:$rootfs/lib/x86_64-linux-gnu" "$M/nix"
    cat >"$M/bin/nix" <<WRAPPER
#!/bin/bash
# Nix 2.26 as a multi-user install has it (testbed/modern-nix.sh): its nix.conf, and clients on its daemon.
export NIX_CONF_DIR=$M/etc NIX_DAEMON_SOCKET_PATH=$SOCKET_DIR/socket
[ "\${0##*/}" = nix-daemon ] || export NIX_REMOTE=daemon
exec -a "\${0##*/}" $M/nix "\$@"
WRAPPER
    chmod 755 "$M/bin/nix"
    for n in nix-build nix-channel nix-collect-garbage nix-copy-closure nix-daemon nix-env nix-hash \
      nix-instantiate nix-prefetch-url nix-shell nix-store; do
      ln -s nix "$M/bin/$n"
    done
    # install-nix-action's nix.conf, with this machine's facts: no internet (no substituters), and
    # the build users Debian's packaging made. The sandbox is stated, not left to the default.
    cat >"$M/etc/nix.conf" <<'CONF'
experimental-features = nix-command flakes
sandbox = true
substituters =
build-users-group = nixbld
max-jobs = auto
trusted-users = root nda-runner
# What a test adds for a while (then restarts the daemon); a missing file is no error.
!include local.conf
CONF
    # A home for each user (Nix 2.26 keeps its fetcher and evaluation caches under ~/.cache).
    for u in nda-runner nda-untrusted; do
      mkdir -p "$M/home/$u"
      chown "$u:" "$M/home/$u"
    done
    chmod -R a+rX "$M"
    echo "$stamp" >"$M/.stamp"
  fi
  daemon_pid >/dev/null && return 0
  mkdir -p "$SOCKET_DIR"
  chmod 755 "$SOCKET_DIR"
  rm -f "$SOCKET_DIR/socket"
  # The daemon's own log (one line per client connection, with the trust it gave): tests read it.
  setsid "$M/bin/nix-daemon" >>"$M/daemon.log" 2>&1 </dev/null &
  echo $! >"$M/daemon.pid"
  for _ in $(seq 100); do [ -S "$SOCKET_DIR/socket" ] && break; sleep 0.1; done
  [ -S "$SOCKET_DIR/socket" ] || { tail -5 "$M/daemon.log" >&2; echo "modern-nix: the daemon did not start" >&2; exit 1; }
  log "nix-daemon $("$M/bin/nix" --version | awk '{print $3}') running (pid $(cat "$M/daemon.pid"), sandbox on)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  restart) down; up ;;
  *) echo "usage: modern-nix.sh up|down|restart" >&2; exit 2 ;;
esac
