#!/usr/bin/env bash
# Builds the simulated LAN the end-to-end tests, the demo and the benchmark deploy to (root only):
#
#   runner (root netns) --10.99.1.0/24-- jump (netns nda-jump, sshd) --10.99.2.0/24-- pi (netns nda-pi)
#          \                                                  |---10.99.4.0/24-- pi2 (netns nda-pi2)
#           \                                                 |---10.99.5.0/24-- spi (netns nda-spi: systemd
#            \                                                |                  as PID 1 in a container,
#             \                                               |                  systemd-pi.sh; also at
#              \                                              |                  10.99.8.2, from the runner)
#               \                                             \---10.99.11.0/24-- spi2 (netns nda-spi2: a
#                \                                                 second systemd Pi, for fleets of them)
#                 \                                            |---10.99.13.0/24-- pi3 (netns nda-pi3: like pi,
#                  \                                           |                   the safety lane's, scripts/test.sh)
#                   \                                          \---10.99.14.0/24-- spi3 (netns nda-spi3: like
#                    \                                             spi, the safety lane's)
#                 \-----------------------10.99.3.0/24-------------------------------/ (to pi)
#   jump --10.99.6.0/24-- jump2 (netns nda-jump2, sshd: a second bastion) --10.99.7.0/24-- pi2
#   jump --10.99.12.0/24-- bpi (netns nda-bpi: a QEMU aarch64 machine that really boots, through
#                          U-Boot, a real kernel and systemd; booting-pi.sh, powered on by its suite)
#
# The Pi runs sshd in its own network namespace and its own mount namespace with a private, size-
# limited /nix (tmpfs) and a private /run, so its store, profiles and /run/current-system are separate
# from the runner's. It is reachable from the runner through the jump host at 10.99.2.2, and directly
# at 10.99.3.2 (the "self-hosted runner on the LAN" case). A second Pi, pi2 (10.99.4.2, behind the
# same jump host only), is built the same way, for deploys of several machines; it is also reachable
# at 10.99.7.2 behind a second bastion, jump2 (10.99.6.2), that only the first jump host reaches (a
# chain of jump hosts; jump2 takes only the user nda-deploy and its own key). Everything is idempotent: named namespaces
# and veths outlive a session, so a second run repairs what is missing and keeps what works.
#
# Writes $TESTBED (default /var/lib/nda-testbed): keys/, known_hosts, ssh_config, fixture/ and env
# (shell variables describing all of the above, sourced by tests and scripts).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TESTBED=${TESTBED:-/var/lib/nda-testbed}
export PI_NIX_SIZE=${PI_NIX_SIZE:-1g} PI_BOOT_SIZE=${PI_BOOT_SIZE:-64m}
log() { echo "testbed: $*"; }

[ "$(id -u)" = 0 ] || { echo "testbed: needs root (network and mount namespaces)" >&2; exit 1; }
mkdir -p "$TESTBED"/{keys,jump,jump2,pi/nix,pi/run,pi2/nix,pi2/run,pi3/nix,pi3/run,fixture}
chmod 700 "$TESTBED/keys"

# --- Nix on the runner: no internet here, so no substituters (else every call retries for ~5 s).
export NIX_CONFIG=$'substituters =\nextra-platforms = aarch64-linux'

# --- The fixture flake with its aarch64 busybox.
if [ ! -x "$TESTBED/fixture/busybox/bin/busybox" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download busybox-static:arm64 >/dev/null 2>&1) ||
    cp /var/cache/apt/archives/busybox-static_*_arm64.deb "$tmp/"
  dpkg-deb -x "$tmp"/busybox-static_*arm64.deb "$tmp/x"
  mkdir -p "$TESTBED/fixture/busybox/bin"
  cp "$tmp/x/bin/busybox" "$TESTBED/fixture/busybox/bin/busybox"
  # Busybox picks its applet from argv[0]'s basename, so shebangs use ".../bin/sh".
  ln -sfn busybox "$TESTBED/fixture/busybox/bin/sh"
  rm -rf "$tmp"
fi
# The flake, its building blocks, the nixpkgs stand-in and the configuration/network files: exactly
# the repository's (a file left over from an earlier checkout must not stand in for a missing one).
# Generation 0's store path, as seed.sh caches it, is the old fixture's.
rm -f "$TESTBED/gen0.out"
find "$TESTBED/fixture" -mindepth 1 -maxdepth 1 ! -name busybox -exec rm -rf {} +
cp -r "$here/fixture/." "$TESTBED/fixture/"
# The NixOS module the action ships for targets (nixos/: the boot trial), as the fixtures use it.
cp -r "$here/../nixos" "$TESTBED/fixture/nixos-module"
# deploy-user.nix takes the action's scripts from ../src/target/scripts (the repository's layout).
mkdir -p "$TESTBED/fixture/src/target" && cp -r "$here/../src/target/scripts" "$TESTBED/fixture/src/target/"

# --- Keys: the deploy key (plain and passphrase-protected copies), a key nobody accepts, and the
# hosts' own keys.
k="$TESTBED/keys"
[ -f "$k/deploy" ] || ssh-keygen -q -t ed25519 -N '' -C deploy@testbed -f "$k/deploy"
[ -f "$k/deploy-encrypted" ] || ssh-keygen -q -t ed25519 -N 'correct horse battery staple' -C enc@testbed -f "$k/deploy-encrypted"
[ -f "$k/deploy-rsa" ] || ssh-keygen -q -t rsa -b 3072 -m PEM -N '' -C rsa@testbed -f "$k/deploy-rsa"
[ -f "$k/jump-only" ] || ssh-keygen -q -t ed25519 -N '' -C jump-only@testbed -f "$k/jump-only"
[ -f "$k/jump2-only" ] || ssh-keygen -q -t ed25519 -N '' -C jump2-only@testbed -f "$k/jump2-only"
[ -f "$k/stranger" ] || ssh-keygen -q -t ed25519 -N '' -C stranger@testbed -f "$k/stranger"
# The systemd Pis' deploy user (nixos/deploy-user.nix): its SSH key, authorized for nothing else,
# and the Nix key the action signs with (the Pis' daemons trust its public half).
[ -f "$k/gate" ] || ssh-keygen -q -t ed25519 -N '' -C gate@testbed -f "$k/gate"
[ -f "$k/gate-signing.secret" ] ||
  nix-store --generate-binary-cache-key nda-gate-1 "$k/gate-signing.secret" "$k/gate-signing.public"
[ -f "$k/other-signing.secret" ] ||
  nix-store --generate-binary-cache-key nda-other-1 "$k/other-signing.secret" "$k/other-signing.public"
for h in jump jump2 pi pi2 pi3 spi spi2 spi3 bpi; do
  [ -f "$k/${h}_host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$k/${h}_host_ed25519"
  [ -f "$k/${h}_host_rsa" ] || ssh-keygen -q -t rsa -b 3072 -N '' -f "$k/${h}_host_rsa"
done
# The jump host lets these keys forward to the Pi and nothing else; the Pi takes the deploy keys.
{
  for key in deploy deploy-encrypted deploy-rsa jump-only gate; do
    echo "restrict,port-forwarding $(cat "$k/$key.pub")"
  done
} > "$TESTBED/jump/authorized_keys"
# The second bastion takes jump-only (one key for every hop) and its own key, not the deploy key:
# a chain given only ssh-private-key is refused at the second hop. Read as nda-deploy: world-readable.
{
  for key in jump-only jump2-only; do
    echo "restrict,port-forwarding $(cat "$k/$key.pub")"
  done
} > "$TESTBED/jump2/authorized_keys"
chmod 0644 "$TESTBED/jump2/authorized_keys"
cat "$k/deploy.pub" "$k/deploy-encrypted.pub" "$k/deploy-rsa.pub" > "$TESTBED/pi/authorized_keys"
{
  echo "10.99.1.2,[10.99.1.2]:2222,[10.99.1.2]:2223,[10.99.1.2]:2224 $(cut -d' ' -f1,2 "$k/jump_host_ed25519.pub")"
  echo "10.99.2.2,10.99.3.2 $(cut -d' ' -f1,2 "$k/pi_host_ed25519.pub")"
  echo "10.99.4.2,10.99.7.2 $(cut -d' ' -f1,2 "$k/pi2_host_ed25519.pub")"
  echo "10.99.6.2 $(cut -d' ' -f1,2 "$k/jump2_host_ed25519.pub")"
  echo "10.99.5.2,10.99.8.2 $(cut -d' ' -f1,2 "$k/spi_host_ed25519.pub")"
  echo "10.99.11.2 $(cut -d' ' -f1,2 "$k/spi2_host_ed25519.pub")"
  echo "10.99.12.2 $(cut -d' ' -f1,2 "$k/bpi_host_ed25519.pub")"
  echo "10.99.13.2 $(cut -d' ' -f1,2 "$k/pi3_host_ed25519.pub")"
  echo "10.99.14.2 $(cut -d' ' -f1,2 "$k/spi3_host_ed25519.pub")"
} > "$TESTBED/known_hosts"

# --- A stand-in for GitHub's API (__tests__/e2e/github-service.ts runs it in the jump host's
# namespace, on 10.99.1.2:443): Nix 2.8 fetches github:OWNER/REPO?host=H from https://api.H (H: letters,
# digits and dots only), so that name resolves here (a line of ours in /etc/hosts, removed by
# teardown.sh), with a certificate from a CA of the testbed's own (tests give Nix the CA:
# NIX_SSL_CERT_FILE).
gh="$TESTBED/github" gh_host=github.ndatestbed.test
mkdir -p "$gh"
if [ ! -f "$gh/api.$gh_host.pem" ]; then
  [ -f "$gh/ca.pem" ] ||
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -keyout "$gh/ca.key" -out "$gh/ca.pem" -subj "/CN=nda-testbed CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$gh/api.$gh_host.key" \
    -out "$gh/server.csr" -subj "/CN=api.$gh_host" 2>/dev/null
  printf 'subjectAltName=DNS:api.%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$gh_host" >"$gh/ext"
  openssl x509 -req -in "$gh/server.csr" -CA "$gh/ca.pem" -CAkey "$gh/ca.key" -CAcreateserial \
    -days 3650 -extfile "$gh/ext" -out "$gh/api.$gh_host.pem" 2>/dev/null
fi
grep -q " api.$gh_host # nda-testbed\$" /etc/hosts || echo "10.99.1.2 api.$gh_host # nda-testbed" >>/etc/hosts

# --- The Pis' own Nix configuration (their SSH sessions get NIX_CONF_DIR, see sshd_config): like a
# real Pi has cache.nixos.org, they have a substituter of their own -- a signed binary cache under
# $TESTBED/substituter, empty until a test puts paths there -- and no other (no internet here).
[ -f "$k/substituter.secret" ] ||
  nix-store --generate-binary-cache-key nda-testbed-1 "$k/substituter.secret" "$k/substituter.public"
mkdir -p "$TESTBED/substituter" "$TESTBED/pi-nix-conf"
[ -f "$TESTBED/substituter/nix-cache-info" ] ||
  printf 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n' > "$TESTBED/substituter/nix-cache-info"
cat > "$TESTBED/pi-nix-conf/nix.conf" <<CONF
sandbox = false
substituters = file://$TESTBED/substituter
trusted-public-keys = $(cat "$k/substituter.public")
CONF

# --- Users on the Pi (the namespaces share /etc with the host): one with passwordless sudo, one
# whose sudo asks for a password. Both log in with the deploy key (the Pi's AuthorizedKeysFile).
for u in nda-deploy nda-nosudo; do
  id "$u" >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /bin/sh "$u"
done
# An unprivileged runner user (the action run as a runner service account with a nix-daemon).
# nda-untrusted: the same, but not in the modern Nix's trusted-users (modern-nix.sh).
for u in nda-runner nda-untrusted; do
  id "$u" >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /bin/sh "$u"
done
echo 'nda-deploy ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/nda-deploy
echo 'nda-nosudo ALL=(ALL) ALL' > /etc/sudoers.d/nda-nosudo
# The runner user has passwordless sudo, as on a GitHub-hosted runner (for binfmt; Nix trust is the daemon's).
echo 'nda-runner ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/nda-runner
chmod 0440 /etc/sudoers.d/nda-deploy /etc/sudoers.d/nda-nosudo /etc/sudoers.d/nda-runner
# sshd refuses accounts whose password field is "!" (locked); "*" means "no password, key login ok".
usermod -p '*' nda-deploy; usermod -p '*' nda-nosudo

# --- Network. Keep every test address on this machine: the whole range is unreachable from the root
# namespace except through the on-link routes of our own veths.
ip route replace unreachable 10.99.0.0/16
for ns in nda-jump nda-jump2 nda-pi nda-pi2 nda-pi3; do
  ip netns list | grep -qw "$ns" || ip netns add "$ns"
  ip -n "$ns" link set lo up
done
veth() { # root-side-name root-addr ns ns-side-name ns-addr
  if ! ip link show "$1" >/dev/null 2>&1; then
    ip -n "$3" link del "$4" 2>/dev/null || true
    ip link add "$1" type veth peer name "$4" netns "$3"
  fi
  ip addr replace "$2" dev "$1"; ip link set "$1" up
  ip -n "$3" addr replace "$5" dev "$4"; ip -n "$3" link set "$4" up
}
veth nda-jump0 10.99.1.1/24 nda-jump eth0 10.99.1.2/24
veth nda-pi0 10.99.3.1/24 nda-pi eth1 10.99.3.2/24
if ! ip -n nda-jump link show eth1 >/dev/null 2>&1; then
  ip -n nda-pi link del eth0 2>/dev/null || true
  ip -n nda-jump link add eth1 type veth peer name eth0 netns nda-pi
fi
ip -n nda-jump addr replace 10.99.2.1/24 dev eth1; ip -n nda-jump link set eth1 up
ip -n nda-pi addr replace 10.99.2.2/24 dev eth0; ip -n nda-pi link set eth0 up
ip -n nda-pi link set eth1 up
if ! ip -n nda-jump link show eth2 >/dev/null 2>&1; then
  ip -n nda-pi2 link del eth0 2>/dev/null || true
  ip -n nda-jump link add eth2 type veth peer name eth0 netns nda-pi2
fi
ip -n nda-jump addr replace 10.99.4.1/24 dev eth2; ip -n nda-jump link set eth2 up
ip -n nda-pi2 addr replace 10.99.4.2/24 dev eth0; ip -n nda-pi2 link set eth0 up
# The chain: jump (eth4) -- jump2 (eth0); jump2 (eth1) -- pi2 (eth1). (eth3 of jump is spi's.)
ns_link() { # ns-a if-a addr-a ns-b if-b addr-b
  if ! ip -n "$1" link show "$2" >/dev/null 2>&1; then
    ip -n "$4" link del "$5" 2>/dev/null || true
    ip -n "$1" link add "$2" type veth peer name "$5" netns "$4"
  fi
  ip -n "$1" addr replace "$3" dev "$2"; ip -n "$1" link set "$2" up
  ip -n "$4" addr replace "$6" dev "$5"; ip -n "$4" link set "$5" up
}
ns_link nda-jump eth4 10.99.6.1/24 nda-jump2 eth0 10.99.6.2/24
# pi3, the safety lane's Pi: jump (eth7) -- pi3 (eth0), behind the jump host only.
ns_link nda-jump eth7 10.99.13.1/24 nda-pi3 eth0 10.99.13.2/24
ns_link nda-jump2 eth1 10.99.7.1/24 nda-pi2 eth1 10.99.7.2/24

# --- sshd configs. StrictModes is off because the key files live under $TESTBED.
sshd_config() { # host listen authorized_keys pidfile extra...
  local host=$1 listen=$2 keys=$3 pid=$4; shift 4
  cat <<CONF
ListenAddress $listen
HostKey $k/${host}_host_ed25519
HostKey $k/${host}_host_rsa
PidFile $pid
AuthorizedKeysFile $keys
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
AcceptEnv LANG
Subsystem sftp internal-sftp
$(printf '%s\n' "$@")
CONF
}
sshd_config jump 0.0.0.0:22 "$TESTBED/jump/authorized_keys" "$TESTBED/jump/sshd.pid" \
  "AllowTcpForwarding yes" > "$TESTBED/jump/sshd_config"
# The jump host's other doors (the same host, keys and rules): port 2222 for the booting Pi's
# suites, 2223 for the systemd Pis', 2224 for the safety lane's (scripts/test.sh's lanes), so that each lane's faults, which
# stop and cut its own door's sshd, leave the other lanes' connections alone.
sshd_config jump 0.0.0.0:2222 "$TESTBED/jump/authorized_keys" "$TESTBED/jump/sshd-bpi.pid" \
  "AllowTcpForwarding yes" > "$TESTBED/jump/sshd_config-bpi"
sshd_config jump 0.0.0.0:2223 "$TESTBED/jump/authorized_keys" "$TESTBED/jump/sshd-spi.pid" \
  "AllowTcpForwarding yes" > "$TESTBED/jump/sshd_config-spi"
sshd_config jump 0.0.0.0:2224 "$TESTBED/jump/authorized_keys" "$TESTBED/jump/sshd-safety.pid" \
  "AllowTcpForwarding yes" > "$TESTBED/jump/sshd_config-safety"
sshd_config jump2 0.0.0.0:22 "$TESTBED/jump2/authorized_keys" "$TESTBED/jump2/sshd.pid" \
  "AllowTcpForwarding yes" "AllowUsers nda-deploy" > "$TESTBED/jump2/sshd_config"
for pi in pi pi2 pi3; do
  sshd_config "$pi" 0.0.0.0:22 "$TESTBED/pi/authorized_keys" /run/sshd-pi.pid \
    "AllowTcpForwarding no" "SetEnv NIX_CONF_DIR=$TESTBED/pi-nix-conf" > "$TESTBED/$pi/sshd_config"
done

# A benchmark stopped half-way (bench/bench.js throttles the jump host's links to pi and spi with
# tc) leaves its rate behind: the tests' links are unthrottled.
for link in eth1 eth3; do
  if ip netns exec nda-jump tc qdisc show dev "$link" root 2>/dev/null | grep -q '^qdisc tbf'; then
    log "removing a link rate a benchmark left on the jump host's $link"
    ip netns exec nda-jump tc qdisc del dev "$link" root
  fi
done

# --- QEMU binfmt, the jump hosts' sshd, and the Pis (pi.sh start: a private /nix, tmpfs and
# size-limited like an SD card, /boot and /run, and their sshd).
"$here/repair.sh"

# An OpenSSH client config for the tests' own checks of the Pi (and the benchmark's peers).
cat > "$TESTBED/ssh_config" <<CONF
Host jump
  HostName 10.99.1.2
Host pi
  HostName 10.99.2.2
  ProxyJump jump
Host pi-direct
  HostName 10.99.3.2
Host pi2
  HostName 10.99.4.2
  ProxyJump jump
Host jump2
  HostName 10.99.6.2
  User nda-deploy
  IdentityFile $k/jump2-only
  ProxyJump jump
Host pi2-chain
  HostName 10.99.7.2
  ProxyJump jump,jump2
Host jump-spi
  HostName 10.99.1.2
  Port 2223
Host spi
  HostName 10.99.5.2
  ProxyJump jump-spi
Host spi-direct
  HostName 10.99.8.2
Host spi2
  HostName 10.99.11.2
  ProxyJump jump-spi
Host jump-bpi
  HostName 10.99.1.2
  Port 2222
Host jump-safety
  HostName 10.99.1.2
  Port 2224
Host pi3
  HostName 10.99.13.2
  ProxyJump jump-safety
Host spi3
  HostName 10.99.14.2
  ProxyJump jump-safety
Host bpi
  HostName 10.99.12.2
  ProxyJump jump-bpi
# Last: the first value of a setting wins, so the hosts above may set their own User.
Host *
  User root
  IdentityFile $k/deploy
  IdentitiesOnly yes
  UserKnownHostsFile $TESTBED/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
CONF

cat > "$TESTBED/env" <<ENV
TESTBED=$TESTBED
TESTBED_FIXTURE=path:$TESTBED/fixture
TESTBED_JUMP=10.99.1.2
TESTBED_PI=10.99.2.2
TESTBED_PI_DIRECT=10.99.3.2
TESTBED_PI2=10.99.4.2
TESTBED_JUMP2=10.99.6.2
TESTBED_PI2_CHAIN=10.99.7.2
TESTBED_SPI=10.99.5.2
TESTBED_SPI_DIRECT=10.99.8.2
TESTBED_SPI2=10.99.11.2
TESTBED_BPI=10.99.12.2
TESTBED_JUMP_BPI=10.99.1.2:2222
TESTBED_JUMP_SPI=10.99.1.2:2223
TESTBED_PI3=10.99.13.2
TESTBED_SPI3=10.99.14.2
TESTBED_JUMP_SAFETY=10.99.1.2:2224
TESTBED_KEYS=$k
TESTBED_KNOWN_HOSTS=$TESTBED/known_hosts
TESTBED_SSH_CONFIG=$TESTBED/ssh_config
TESTBED_SUBSTITUTER=$TESTBED/substituter
TESTBED_GITHUB_HOST=$gh_host
TESTBED_GITHUB_CA=$TESTBED/github/ca.pem
TESTBED_MODERN_NIX=$TESTBED/modern
ENV

# --- Seed the Pis with generation 0 ("as installed") when they have no system yet.
PI=pi "$here/pi.sh" seed-if-empty
PI=pi2 "$here/pi.sh" seed-if-empty
PI=pi3 "$here/pi.sh" seed-if-empty
# --- The systemd Pi (systemd-pi.sh): boots its container once; the first time on a machine, builds
# the root file system it boots (rootfs.sh, about 2 minutes, then cached).
PI=spi "$here/systemd-pi.sh" start
# The second one (canary and rollback-fleet on systemd Pis), from the same root file system.
PI=spi2 "$here/systemd-pi.sh" start
# The safety lane's (scripts/test.sh): the safety suites on a systemd Pi beside the systemd Pis' lane.
PI=spi3 "$here/systemd-pi.sh" start
# --- The booting Pi (booting-pi.sh: QEMU, U-Boot, a real arm64 kernel): its image and base disk
# only (the first time on a machine about 9 minutes, then cached); its suite powers it on and off.
"$here/booting-pi.sh" image
# --- The runner's side on Nix 2.26 with a nix-daemon and its sandbox (modern-nix.sh), from the same
# root file system: for the e2e-modern suites.
"$here/modern-nix.sh" up
log "ready ($TESTBED/env)"
