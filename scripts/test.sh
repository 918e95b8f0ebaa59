#!/usr/bin/env bash
# The test command (`npm test`; .ci/run calls it). As root it installs what the tests need (Debian
# packages, npm dependencies) and builds the testbed (namespaces, sshd, binfmt), then runs every test:
# unit tests and end-to-end tests against real Nix, QEMU and OpenSSH. Without root, only the unit tests
# run and the e2e suites skip with a one-line reason (in CI, CI=true, they fail instead).
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
# One jest run, its JSON results kept under a name for the closing line.
jest_run() {
  local name=$1
  shift
  # Its results are expected: a jest that ends without writing them (it crashed) fails the closing line.
  : >"$results/$name.expected"
  node_modules/.bin/jest --runInBand --passWithNoTests --json --outputFile="$results/$name.json" "$@"
}
all_projects=(--selectProjects unit e2e e2e-spi e2e-modern)
# The lanes started in the background, ended with everything they started if this script ends
# first (Ctrl-C, a kill): by their recorded pids and their children's, never by name.
lanes=()
# shellcheck disable=SC2317 # called from the trap below
kill_tree() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
}
# shellcheck disable=SC2317
stop_lanes() {
  local pid
  for pid in "${lanes[@]}"; do kill_tree "$pid"; done
  [ "${#lanes[@]}" = 0 ] || bash testbed/booting-pi.sh stop >/dev/null 2>&1 || true
  # Also when lint or the setup failed.
  [ -z "${results:-}" ] || rm -rf "$results"
}
trap stop_lanes EXIT
trap 'exit 130' INT TERM

# CPU per lane, measured (docs/design/parallel-suite.md): each lane in a cpuacct cgroup of its own
# where the machine has cgroup v1's cpuacct, and the whole machine's busy time from /proc/stat.
# What a lane starts counts to it (the booting Pi's QEMU included); the Pis' sshd started by
# setup.sh and the systemd Pis' containers count to the machine only.
cpuacct=/sys/fs/cgroup/cpuacct
cpu_lanes=()
machine_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
lane_cgroup() {
  [ -w "$cpuacct" ] || return 0
  mkdir -p "$cpuacct/nda-lane-$1" || return 0
  # The group outlives a run while daemons a lane started (its Pis' sshd) live on: counted from here.
  cat "$cpuacct/nda-lane-$1/cpuacct.usage" >"$results/cpu-$1.start" 2>/dev/null || true
  echo "$BASHPID" >"$cpuacct/nda-lane-$1/cgroup.procs" || true
}
cpu_report() {
  local line="test: CPU-seconds" lane usage
  for lane in "${cpu_lanes[@]}"; do
    usage=$(cat "$cpuacct/nda-lane-$lane/cpuacct.usage" 2>/dev/null) || continue
    usage=$((usage - $(cat "$results/cpu-$lane.start" 2>/dev/null || echo 0)))
    line="$line, lane $lane $((usage / 1000000000))"
    rmdir "$cpuacct/nda-lane-$lane" 2>/dev/null || true
  done
  echo "$line, the machine $((($(machine_busy) - busy_at_start) / $(getconf CLK_TCK))) ($(nproc) cores)"
}

# Lanes side by side (below) as root with no arguments; else everything in one jest.
lanes_mode=''
[ "$(id -u)" != 0 ] || [ $# -gt 0 ] || [ -n "${NDA_SERIAL:-}" ] || lanes_mode=yes
if [ "$(id -u)" = 0 ]; then
  # One run at a time on this machine's testbed (scripts/testbed-lock.sh).
  [ -n "${NDA_TESTBED_LOCKED:-}" ] || exec bash scripts/testbed-lock.sh bash "$0" "$@"
  bash scripts/install-deps.sh
else
  [ -x node_modules/.bin/jest ] || npm ci --no-audit --no-fund
  echo "test: not root, so the end-to-end suites will skip (they need network and mount namespaces)"
fi

results=$(mktemp -d)

# Lint first (types, formatting, eslint's promise rules, shellcheck of the remote scripts): cheap,
# and a floating promise or a broken script is a bug the e2e suite may not hit. Before the unit
# tests start: it writes src/target/scripts' embedding, which they bundle.
npm run -s lint
busy_at_start=$(machine_busy)

if [ -n "$lanes_mode" ]; then
  # The unit tests need no testbed: they run beside its setup and the lanes (about 65 s of CPU
  # that the lanes, which mostly wait, have room for), logged to a file shown at the end.
  (
    lane_cgroup unit
    jest_run unit --selectProjects unit
  ) >"$results/unit.log" 2>&1 &
  unit=$!
  lanes+=("$unit")
fi
if [ "$(id -u)" = 0 ]; then
  bash testbed/setup.sh
  # The e2e suites take the testbed as set up (__tests__/e2e/harness.ts), not once per test file.
  export NDA_TESTBED_SET_UP=1
fi

if [ -z "$lanes_mode" ]; then
  # Everything in one jest (without root the e2e suites skip; arguments go to that one run).
  jest_run all "${all_projects[@]}" "$@" || status=1
else
  # Lanes side by side after the suites that switch the machine's own state, each on Pis of its
  # own and through its own door of the jump host (testbed/setup.sh), each checking and cutting
  # only its own (NDA_LANE, __tests__/e2e/harness.ts). docs/testing.md says what else keeps them
  # apart. Four lanes (NDA_LANES=3 chooses three): on 2 cores, four once stretched the real boots'
  # windows past what the tests allow, while the systemd Pis shared one cgroup tree and waited on
  # each other; with a tree each (bddd2d2) four took 13.7 min here, three 16.0-16.7.
  #   1. binfmt and modern-nix: they turn the runner's aarch64 binfmt off and restart the modern
  #      nix-daemon, which no other suite may see.
  jest_run first --selectProjects e2e --testPathPattern '__tests__/e2e/(binfmt|modern-nix)\.test\.ts$' || status=1
  lane_count=${NDA_LANES:-4}
  # The safety lane's suites: faults, safety and rollback on pi3, and e2e-spi's faults on spi3.
  # Without it they run in the main lane (on pi) and the systemd Pis' lane (on spi).
  safety_suites='faults|safety|rollback'
  spi_ignored='__tests__/e2e/faults\.test\.ts$'
  # With three, the booting Pi's lane runs faults after its own suite, on the safety lane's pi3
  # (idle then, its door of its own): the main lane waits most of its time, the booting Pi's
  # lane ends about 400 s before it, and faults is its longest suite (about 250 s, mostly windows).
  after_boot=''
  if [ "$lane_count" != 4 ]; then safety_suites='' spi_ignored='^$' after_boot='faults'; fi
  #   2. the booting Pi's lane (about 13 minutes of real boots), the systemd Pis' lane (their own
  #      suites, and the safety suites again on spi: project e2e-spi), with four the safety lane,
  #      each logged to a file shown when it ends; the main lane (pi, pi2 and the light Pis) beside
  #      them, on the terminal.
  others="the booting Pi's${after_boot:+ (then $after_boot on pi3)}, the systemd Pis'"
  [ -z "$safety_suites" ] || others="$others, the safety suites'"
  echo "test: $lane_count lanes side by side: $others and the main one; the others' logs follow the main one's"
  cpu_lanes=(unit booting-pi spi main)
  (
    lane_cgroup booting-pi
    lane=0
    NDA_LANE=booting-pi jest_run booting-pi --selectProjects e2e \
      --testPathPattern '__tests__/e2e/booting-pi\.test\.ts$' || lane=1
    if [ -n "$after_boot" ]; then
      NDA_LANE=safety jest_run booting-pi-then --selectProjects e2e \
        --testPathPattern "__tests__/e2e/($after_boot)\\.test\\.ts\$" || lane=1
    fi
    exit "$lane"
  ) >"$results/booting-pi.log" 2>&1 &
  booting=$!
  lanes+=("$booting")
  # shellcheck disable=SC2030,SC2031 # each lane's subshell sets its own NDA_LANE, on purpose
  (
    export NDA_LANE=spi
    lane_cgroup spi
    lane=0
    jest_run spi-own --selectProjects e2e \
      --testPathPattern '__tests__/e2e/(systemd|deploy-user|examples-spi)\.test\.ts$' || lane=1
    jest_run spi-safety --selectProjects e2e-spi --testPathIgnorePatterns '/node_modules/' "$spi_ignored" || lane=1
    exit "$lane"
  ) >"$results/spi.log" 2>&1 &
  spi=$!
  lanes+=("$spi")
  waited=(unit spi booting)
  if [ -n "$safety_suites" ]; then
    # shellcheck disable=SC2030,SC2031 # each lane's subshell sets its own NDA_LANE, on purpose
    (
      export NDA_LANE=safety
      lane_cgroup safety
      lane=0
      jest_run safety-own --selectProjects e2e \
        --testPathPattern "__tests__/e2e/($safety_suites)\\.test\\.ts\$" || lane=1
      jest_run safety-spi --selectProjects e2e-spi --testPathPattern "$spi_ignored" || lane=1
      exit "$lane"
    ) >"$results/safety.log" 2>&1 &
    safety=$!
    lanes+=("$safety")
    waited=(unit spi safety booting)
    cpu_lanes+=(safety)
  fi
  (
    lane_cgroup main
    NDA_LANE=main jest_run main --selectProjects e2e e2e-modern --testPathIgnorePatterns '/node_modules/' \
      "__tests__/e2e/(binfmt|modern-nix|booting-pi|systemd|deploy-user|examples-spi${safety_suites:+|$safety_suites}${after_boot:+|$after_boot})\\.test\\.ts\$"
  ) || status=1
  for lane in "${waited[@]}"; do
    wait "${!lane}" || status=1
  done
  echo "test: the unit tests:"
  cat "$results/unit.log"
  echo "test: the systemd Pis' lane:"
  cat "$results/spi.log"
  if [ -n "$safety_suites" ]; then
    echo "test: the safety lane:"
    cat "$results/safety.log"
  fi
  echo "test: the booting Pi's lane:"
  cat "$results/booting-pi.log"
  lanes=()
  cpu_report
fi

# One plain closing line, whatever the runner: "N passed, N failed, N skipped".
node -e '
  const fs = require("fs")
  const names = fs.readdirSync(process.argv[1]).filter(f => f.endsWith(".json"))
  const runs = names.map(f => JSON.parse(fs.readFileSync(`${process.argv[1]}/${f}`, "utf8")))
  const sum = k => runs.reduce((n, r) => n + r[k], 0)
  console.log(`jest: ${sum("numPassedTests")} passed, ${sum("numFailedTests")} failed, ${sum("numPendingTests")} skipped`)
  if (sum("numTotalTests") === 0) { console.log("jest: no test ran"); process.exitCode = 1 }
  // A lane whose suites were all left out (a renamed file) must not pass for having run nothing.
  for (const [i, r] of runs.entries()) if (runs.length > 1 && r.numTotalTests === 0) {
    console.log(`jest: the run ${names[i]} ran no test`); process.exitCode = 1
  }
  for (const f of fs.readdirSync(process.argv[1]).filter(f => f.endsWith(".expected")))
    if (!names.includes(f.replace(/expected$/, "json"))) {
      console.log(`jest: the run ${f.replace(/\.expected$/, "")} wrote no results (see its log above)`); process.exitCode = 1
    }
' "$results" || status=1
# (The EXIT trap removes $results.)
exit "$status"
