# shellcheck shell=bash
# The operating system files a testbed Pi with systemd has of its own (hostname, host key, sshd,
# users, logind, the NixOS stand-in that starts the booted system's units), written into its root
# file system. Sourced by systemd-pi.sh (a container) and booting-pi.sh (a QEMU machine); the caller
# sets PI, TESTBED and k (the keys folder).
# shellcheck disable=SC2154 # k and PI are the caller's
# usage: configure ROOT
configure() {
  local root=$1
  echo "$PI" >"$root/etc/hostname"
  install -m 600 "$k/${PI}_host_ed25519" "$root/etc/ssh/nda_host_ed25519"
  install -m 644 "$k/${PI}_host_ed25519.pub" "$root/etc/ssh/nda_host_ed25519.pub"
  cat >"$root/etc/ssh/sshd_config.d/nda.conf" <<CONF
HostKey /etc/ssh/nda_host_ed25519
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding no
PrintMotd no
CONF
  install -d -m 700 "$root/root/.ssh"
  install -m 600 "$TESTBED/pi/authorized_keys" "$root/root/.ssh/authorized_keys"
  # As on pi (setup.sh): a user with passwordless sudo and one whose sudo asks for a password, both
  # logging in with the deploy key.
  install -m 644 "$TESTBED/pi/authorized_keys" "$root/etc/ssh/nda_authorized_keys"
  echo 'AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/nda_authorized_keys' >>"$root/etc/ssh/sshd_config.d/nda.conf"
  local u
  for u in nda-deploy nda-nosudo; do
    chroot "$root" id "$u" >/dev/null 2>&1 ||
      chroot "$root" useradd --system --no-create-home --home-dir /nonexistent --shell /bin/sh "$u"
    chroot "$root" usermod -p '*' "$u"
  done
  # (The booting Pi has no sudo: its tests deploy as root.)
  if [ -d "$root/etc/sudoers.d" ]; then
    echo 'nda-deploy ALL=(ALL) NOPASSWD: ALL' >"$root/etc/sudoers.d/nda-deploy"
    echo 'nda-nosudo ALL=(ALL) ALL' >"$root/etc/sudoers.d/nda-nosudo"
    chmod 0440 "$root/etc/sudoers.d/nda-deploy" "$root/etc/sudoers.d/nda-nosudo"
  fi
  mkdir -p "$root/etc/systemd/logind.conf.d"
  # logind ends every process of a session when it closes, unless it left the session (as a
  # transient unit started with systemd-run does) -- root's too: the deploy logs in as root, and
  # logind spares root unless KillExcludeUsers names someone else (an empty list still spares it).
  printf '[Login]\nKillUserProcesses=yes\nKillExcludeUsers=nobody\n' >"$root/etc/systemd/logind.conf.d/nda.conf"
  # NixOS at boot starts the booted system's units (its /etc/systemd/system): here, after the
  # stage-2 stand-in chose the system and before sshd, so that a system whose units break SSH is
  # unreachable from its first moment (a test cannot reach it in between by chance).
  cat >"$root/usr/local/sbin/nda-boot-units" <<'SH'
#!/bin/sh
sys=$(readlink -f /run/booted-system) || exit 0
[ -d "$sys/etc/systemd/system" ] || exit 0
units=$(ls "$sys/etc/systemd/system" | grep -E '[.](service|target)$')
mkdir -p /run/systemd/system
for u in $units; do ln -sfn "$sys/etc/systemd/system/$u" "/run/systemd/system/$u"; done
systemctl daemon-reload
# A unit that waits for a deployment key (and what orders after one) waits until the deploy uploads
# it, after sshd is up: started without waiting for it, as sshd on NixOS does not wait for them.
keyed="" now=""
for u in $units; do
  case $u in
    *-key.service | keys.target) keyed="$keyed $u" ;;
    *) if grep -q -e '-key[.]service' -e 'keys[.]target' "$sys/etc/systemd/system/$u"; then keyed="$keyed $u"; else now="$now $u"; fi ;;
  esac
done
# shellcheck disable=SC2086
[ -z "$keyed" ] || systemctl start --no-block $keyed
# One transaction, as multi-user.target starts them on NixOS: side by side, in their own order (the
# boot trial does not wait for a slow unit to finish).
# shellcheck disable=SC2086
systemctl start $now || echo "nda-boot-units: failed to start: $(systemctl --failed --plain --no-legend | cut -d' ' -f1 | tr '\n' ' ')" >&2
SH
  chmod 755 "$root/usr/local/sbin/nda-boot-units"
  cat >"$root/etc/systemd/system/nda-boot-units.service" <<'UNIT'
[Unit]
Description=NixOS stand-in: start the booted system's units
After=nda-stage2.service
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/nda-boot-units
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
UNIT
  mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
  ln -sfn /etc/systemd/system/nda-boot-units.service "$root/etc/systemd/system/multi-user.target.wants/nda-boot-units.service"
}

