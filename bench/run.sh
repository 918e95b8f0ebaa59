#!/usr/bin/env bash
# npm run bench: the copy benchmark (root; takes 20-30 minutes with the default rates and rounds).
#   BENCH_RATES=10,50,100,0   link rates in Mbit/s (0 = unthrottled)
#   BENCH_ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench: run as root (network namespaces, tc)" >&2; exit 1; }
bash scripts/install-deps.sh
bash testbed/setup.sh >/dev/null
node bench/bench.js
