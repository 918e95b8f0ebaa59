#!/usr/bin/env bash
# Brings back what a test may have stopped, as testbed/setup.sh left it (root; cheap and
# idempotent): the qemu-aarch64 binfmt, the jump hosts' sshd (each door of the jump host), and
# pi's, pi2's and pi3's mounts, links and sshd. It makes nothing setup.sh did not: a missing namespace or file is setup.sh's to make.
# setup.sh ends its network part with it; the e2e suites run it before each test file.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TESTBED=${TESTBED:-/var/lib/nda-testbed}
log() { echo "testbed: $*"; }
# shellcheck source=testbed/pidfile.sh
. "$here/pidfile.sh"
# One repair at a time: scripts/test.sh's lanes run side by side, and two repairs that both found
# an sshd stopped would both start it.
exec 9>"$TESTBED/repair.lock"
flock 9
# In a lane (NDA_LANE), only what is the lane's own: its door of the jump host, and pi and pi2 in
# the main lane only, pi3 in the safety lane only (another lane's repair must not start a Pi that
# lane is resetting).
case "${NDA_LANE:-}" in
  booting-pi) doors=(jump/sshd-bpi) pis=() ;;
  spi) doors=(jump/sshd-spi) pis=() ;;
  main) doors=(jump/sshd jump2/sshd) pis=(pi pi2) ;;
  safety) doors=(jump/sshd-safety) pis=(pi3) ;;
  *) doors=(jump/sshd jump/sshd-bpi jump/sshd-spi jump/sshd-safety jump2/sshd) pis=(pi pi2 pi3) ;;
esac

# QEMU binfmt for aarch64 (the fixture's builders and the Pis' activation scripts are aarch64).
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
if ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
  log "enabling qemu-aarch64 binfmt"
  update-binfmts --enable qemu-aarch64
fi

mkdir -p /run/sshd
for door in "${doors[@]}"; do
  if ! alive "$TESTBED/$door.pid"; then
    log "starting ${door%%/*}'s sshd (${door#*/})"
    ip netns exec "nda-${door%%/*}" /usr/sbin/sshd -f "$TESTBED/${door%%/*}/sshd_config${door#*/sshd}"
  fi
done

for pi in "${pis[@]}"; do PI=$pi "$here/pi.sh" start; done
