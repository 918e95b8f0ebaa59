#!/usr/bin/env bash
# npm run lint: types (tsc), formatting (prettier), eslint (with its promise rules), shellcheck
# of every shell script -- the ones run on the target (src/target/scripts, POSIX sh) and the
# project's own -- and Nix's parser over the Nix files the action ships. Without shellcheck off CI, that part is skipped with a note; in CI it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
node scripts/embed-scripts.js
npx tsc --noEmit -p tsconfig.json
npx prettier --check --log-level warn "src/**/*.ts" "__tests__/**/*.ts"
npx eslint .
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck -s sh src/target/scripts/*.sh nixos/*.sh nixos/deploy-user/*.sh
  # SC2016: single quotes that pass $ to another shell on purpose.
  shellcheck -e SC2016 testbed/*.sh scripts/*.sh bench/*.sh .ci/run
elif [ "${CI:-}" = true ]; then
  echo "lint: shellcheck is not installed (scripts/install-deps.sh installs it)" >&2
  exit 1
else
  echo "lint: shellcheck not installed, shell scripts not checked (apt-get install shellcheck)"
fi
# Nix files through Nix's own parser (where Nix is installed: the tests need it anyway).
if command -v nix-instantiate >/dev/null 2>&1; then
  for f in src/nix/*.nix nixos/*.nix; do nix-instantiate --parse "$f" >/dev/null; done
elif [ "${CI:-}" = true ]; then
  echo "lint: nix-instantiate is not installed (scripts/install-deps.sh installs nix-bin)" >&2
  exit 1
fi
echo "lint: ok"
