#!/usr/bin/env bash
# Removes the testbed: sshds, namespaces, veths, the Pi's tmpfs and the unreachable route.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TESTBED=${TESTBED:-/var/lib/nda-testbed}
# shellcheck source=testbed/pidfile.sh
. "$here/pidfile.sh"
PI=pi "$here/pi.sh" stop
PI=pi2 "$here/pi.sh" stop
PI=pi3 "$here/pi.sh" stop
PI=spi "$here/systemd-pi.sh" stop
PI=spi2 "$here/systemd-pi.sh" stop
PI=spi3 "$here/systemd-pi.sh" stop
"$here/booting-pi.sh" stop
"$here/fleet.sh" down
"$here/modern-nix.sh" down
for p in spi spi2 spi3; do
  for m in root nix boot; do mountpoint -q "$TESTBED/$p/$m" && umount -l "$TESTBED/$p/$m"; done
done
for p in jump/sshd jump/sshd-bpi jump/sshd-spi jump/sshd-safety jump2/sshd; do pid=$(pid_of "$TESTBED/$p.pid") && kill "$pid" 2>/dev/null; done
for ns in nda-jump nda-jump2 nda-pi nda-pi2 nda-pi3 nda-spi nda-spi2 nda-spi3 nda-bpi; do ip netns del "$ns" 2>/dev/null; done
ip link del nda-jump0 2>/dev/null; ip link del nda-pi0 2>/dev/null; ip link del nda-spi0 2>/dev/null
ip route del unreachable 10.99.0.0/16 2>/dev/null
sed -i '/ # nda-testbed$/d' /etc/hosts
for u in nda-deploy nda-nosudo nda-runner nda-untrusted; do userdel "$u" 2>/dev/null; rm -f "/etc/sudoers.d/$u"; done
echo "testbed: removed"
