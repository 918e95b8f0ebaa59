#!/usr/bin/env bash
# npm run bench: the copy and store cache benchmarks (root; 20-30 minutes with the defaults).
#   BENCH_PARTS=copy,cache,fleet,fanout,latency,reboot   which benchmarks to run (timeline: one deploy's remote commands, printed;
#                                          reboot: the booting Pi, about 10 minutes)
#   BENCH_FLEET=1,4,12        fleet sizes (light Pis behind the jump host)
#   BENCH_RATES=10,50,100,0   link rates in Mbit/s (0 = unthrottled)
#   BENCH_ROUNDS=3
#   BENCH_PI=spi              the copy against the systemd Pi (its own section)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: run as root (network namespaces, tc)" >&2; exit 1; }
# One run at a time on this machine's testbed (scripts/testbed-lock.sh).
[ -n "${NDA_TESTBED_LOCKED:-}" ] || exec bash scripts/testbed-lock.sh bash "$0" "$@"
bash scripts/install-deps.sh
bash testbed/setup.sh >/dev/null
node bench/bench.js
