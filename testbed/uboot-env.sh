#!/usr/bin/env bash
# The booting Pi's U-Boot environment, as a Pi's is once someone ran `saveenv` at U-Boot's prompt
# and then, on Linux, the action's `boot-once.sh install` (nixos/boot-once.sh, with libubootenv's
# fw_setenv): U-Boot's own default environment (printed by this very U-Boot at its prompt) saved
# as U-Boot saves it (mkenvimage: under QEMU 7.2 U-Boot's own saveenv to the flash fails, its
# buffered writes time out), then the hook installed by the shipped script through the real
# fw_setenv, into the flash image QEMU's virt machine gives U-Boot (its second bank, where
# qemu_arm64's U-Boot keeps its environment). The hook itself never writes the environment.
#   uboot-env.sh OUT    write the 64 MiB flash image OUT
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?OUT}
uboot=/usr/lib/u-boot/qemu_arm64/u-boot.bin
work=$(mktemp -d)
pid=''
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  exec 7>&- 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# A flash bank as erased (all ones): no valid environment, so U-Boot runs its default one.
head -c 64M /dev/zero | tr '\000' '\377' >"$work/flash.img"
mkfifo "$work/con.in" "$work/con.out"
qemu-system-aarch64 -M virt -cpu cortex-a53 -m 256 -bios "$uboot" -display none -nodefaults \
  -drive if=pflash,unit=1,format=raw,file="$work/flash.img" \
  -chardev pipe,id=con,path="$work/con" -serial chardev:con &
pid=$!
cat "$work/con.out" >"$work/console.log" &
exec 7>"$work/con.in"
seen() {
  local _
  for _ in $(seq 600); do grep -qa "$1" "$work/console.log" && return 0; sleep 0.1; done
  echo "uboot-env: U-Boot did not print '$1'; its console:" >&2
  tail -20 "$work/console.log" >&2
  return 1
}
seen 'Hit any key' && printf '\n' >&7
seen '^=> ' && printf 'printenv\n' >&7
seen '^Environment size' 
# Its default environment, one name=value per line (no value of it spans lines).
sed -n '/^=> printenv/,/^Environment size/p' "$work/console.log" | tr -d '\r' | sed '1d;$d' |
  grep -v '^nda_' | grep '=' >"$work/env.txt"
grep -q '^bootcmd=run distro_bootcmd$' "$work/env.txt" || { echo "uboot-env: U-Boot's environment has no bootcmd=run distro_bootcmd" >&2; exit 1; }
# Saved (CONFIG_ENV_SIZE of qemu_arm64: 0x40000, at the start of the second bank).
mkenvimage -s 0x40000 -o "$work/env.bin" "$work/env.txt"
# The hook, installed as on a Pi: fw_printenv and fw_setenv of libubootenv on that environment.
echo "$work/env.bin 0x0 0x40000" >"$work/fw_env.config"
mkdir -p "$work/bin"
for t in fw_printenv fw_setenv; do
  printf '#!/bin/sh\nexec /usr/bin/%s -c %s "$@"\n' "$t" "$work/fw_env.config" >"$work/bin/$t"
  chmod 755 "$work/bin/$t"
done
PATH=$work/bin:$PATH sh "$here/../nixos/boot-once.sh" install 'virtio 0:1' 'virtio scan' >&2
cp "$work/flash.img" "$out.tmp"
dd if="$work/env.bin" of="$out.tmp" conv=notrunc status=none
mv "$out.tmp" "$out"
