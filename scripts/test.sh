#!/usr/bin/env bash
# The test command (`npm test`; .ci/run calls it). As root it installs what the tests need (Debian
# packages, npm dependencies) and builds the testbed (namespaces, sshd, binfmt), then runs every test:
# unit tests and end-to-end tests against real Nix, QEMU and OpenSSH. Without root, only the unit tests
# run and the e2e suites skip with a one-line reason (in CI, CI=true, they fail instead).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
  # One run at a time on this machine's testbed (scripts/testbed-lock.sh).
  [ -n "${NDA_TESTBED_LOCKED:-}" ] || exec bash scripts/testbed-lock.sh bash "$0" "$@"
  bash scripts/install-deps.sh
  bash testbed/setup.sh
  # The e2e suites take the testbed as set up (__tests__/e2e/harness.ts), not once per test file.
  export NDA_TESTBED_SET_UP=1
else
  [ -x node_modules/.bin/jest ] || npm ci --no-audit --no-fund
  echo "test: not root, so the end-to-end suites will skip (they need network and mount namespaces)"
fi

# Lint first (types, formatting, eslint's promise rules, shellcheck of the remote scripts): cheap,
# and a floating promise or a broken script is a bug the e2e suite may not hit.
npm run -s lint

results=$(mktemp)
status=0
node_modules/.bin/jest --selectProjects unit e2e e2e-spi e2e-modern --runInBand --json --outputFile="$results" "$@" || status=$?
# One plain closing line, whatever the runner: "N passed, N failed, N skipped".
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))
  console.log(`jest: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests} skipped`)
  if (r.numTotalTests === 0) { console.log("jest: no test ran"); process.exitCode = 1 }
' "$results" || status=1
rm -f "$results"
exit "$status"
