#!/usr/bin/env bash
# usage: scripts/testbed-lock.sh CMD [ARG...]
# Runs CMD holding this machine's testbed lock: one run at a time on the testbed (npm test, the
# demo, the benchmarks, the stress run, and a developer's e2e run: docs/testing.md), since a second
# run would reset and reboot the Pis under the first one's tests. Waits for the holder to end (an
# hour at most). flock -o: the daemons the testbed starts outlive the run and must not hold the lock.
set -euo pipefail
if [ -n "${NDA_TESTBED_LOCKED:-}" ]; then exec "$@"; fi
lock=/run/lock/nda-testbed.lock
mkdir -p /run/lock
flock -n -o "$lock" true ||
  echo "testbed-lock: another run holds the testbed ($lock); waiting for it to end (an hour at most)" >&2
export NDA_TESTBED_LOCKED=1
exec flock -o -w 3600 -E 75 "$lock" "$@"
