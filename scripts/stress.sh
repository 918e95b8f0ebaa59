#!/usr/bin/env bash
# npm run stress: concurrent runs with random failures and link cuts against one simulated Pi
# (root; about 30 s a round). STRESS_ROUNDS=20 STRESS_SEED=N. Not part of npm test.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "stress: run as root (network and mount namespaces)" >&2; exit 1; }
# One run at a time on this machine's testbed (scripts/testbed-lock.sh).
[ -n "${NDA_TESTBED_LOCKED:-}" ] || exec bash scripts/testbed-lock.sh bash "$0" "$@"
bash scripts/install-deps.sh
bash testbed/setup.sh >/dev/null
exec node_modules/.bin/jest --selectProjects stress --runInBand "$@"
