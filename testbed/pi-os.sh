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


# The deploy user of nixos/deploy-user.nix, as that module sets it up on NixOS, on a systemd Pi's
# Debian: the same gate and nda-root scripts (its nixos/deploy-user/*.sh, @placeholders@ filled in
# as the module fills them, with this root's paths), the action's scripts beside them, the user
# `nix-deploy` whose key runs only the gate (restrict,command= and a Match block forcing it), the
# one sudo rule, and the Nix daemon trusting the deploy's signing key (require-sigs is Nix's
# default). The module's NixOS side (users, sshd, sudo, nix.settings) is not evaluated here: no
# nixpkgs on this machine. usage: configure_deploy_user ROOT REPO
configure_deploy_user() {
  local root=$1 repo=$2 lib=/usr/local/lib/nix-deploy-action hash protocol pub
  rm -rf "$root$lib" && mkdir -p "$root$lib/scripts"
  cp "$repo"/src/target/scripts/*.sh "$root$lib/scripts/"
  chmod -R a+rX,go-w "$root$lib"
  # The hash deploy-user.nix computes: the scripts' contents, joined in the order of their names.
  hash=$(cd "$repo/src/target/scripts" && export LC_ALL=C && for f in *.sh; do cat "$f"; done | sha256sum | cut -d' ' -f1)
  protocol=$(cat "$repo/nixos/deploy-user/PROTOCOL")
  pub=$(cat "$k/gate-signing.public")
  fill() {
    sed -e "s|@path@|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|g" \
      -e "s|@scripts@|$lib/scripts|g" -e "s|@protocol@|$protocol|g" -e "s|@scriptsHash@|$hash|g" \
      -e "s|@root@|$lib/nda-root|g" -e "s|@sudo@|/usr/bin/sudo|g" -e "s|@keyName@|${pub%%:*}|g" \
      -e "s|@publicKey@|$pub|g" -e "s|@keyDirs@|/run/keys|g" -e "s|@tmpdir@|/var/lib/nix-deploy|g" "$1"
  }
  local f
  for f in gate nda-root; do
    { echo '#!/bin/sh'; cat "$repo/nixos/deploy-user/common.sh" "$repo/nixos/deploy-user/${f#nda-}.sh" | fill /dev/stdin; } >"$root$lib/$f"
  done
  chmod 755 "$root$lib/gate" "$root$lib/nda-root"
  chroot "$root" id nix-deploy >/dev/null 2>&1 ||
    chroot "$root" useradd --system --no-create-home --home-dir /var/lib/nix-deploy --shell /bin/sh nix-deploy
  chroot "$root" usermod -p '*' nix-deploy
  # Debian's Nix lets the group nix-users reach the daemon (NixOS lets every user: allowed-users = *).
  chroot "$root" usermod -a -G nix-users nix-deploy
  # Its own directory, as the module's (imports are unpacked there).
  chroot "$root" install -d -o nix-deploy -g nix-deploy -m 700 /var/lib/nix-deploy
  echo "restrict,command=\"$lib/gate\" $(cat "$k/gate.pub")" >"$root/etc/ssh/nda_gate_authorized_keys"
  chmod 644 "$root/etc/ssh/nda_gate_authorized_keys"
  # At the end of sshd_config (a Match block ends only at the next Match or the end of the file).
  if ! grep -q '^Match User nix-deploy' "$root/etc/ssh/sshd_config"; then
    printf '%s\n' 'Match User nix-deploy' '  AuthorizedKeysFile /etc/ssh/nda_gate_authorized_keys' \
      "  ForceCommand $lib/gate" '  DisableForwarding yes' '  PermitTTY no' '  PermitUserRC no' \
      >>"$root/etc/ssh/sshd_config"
  fi
  echo "nix-deploy ALL=(root) NOPASSWD: $lib/nda-root" >"$root/etc/sudoers.d/nix-deploy"
  chmod 0440 "$root/etc/sudoers.d/nix-deploy"
  grep -q '^trusted-public-keys' "$root/etc/nix/nix.conf" 2>/dev/null ||
    echo "trusted-public-keys = $pub" >>"$root/etc/nix/nix.conf"
}
