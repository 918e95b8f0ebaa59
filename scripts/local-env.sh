#!/usr/bin/env bash
# Writes a dotenv file for running the action locally with @github/local-action against the testbed
# (testbed/setup.sh first, as root):
#   bash scripts/local-env.sh .env && npx local-action run . src/main.ts .env
# Inputs are INPUT_<NAME> as the runner passes them (.env.example lists them). The file holds the
# testbed's deploy key: it is written with mode 0600, and .env is ignored by git.
# usage: local-env.sh FILE [CONFIG [TARGET]]   (default: pi-gen1 on pi, through the jump host)
set -euo pipefail
TESTBED=${TESTBED:-/var/lib/nda-testbed}
# shellcheck disable=SC1091 # written by testbed/setup.sh
. "$TESTBED/env"
out=${1:?usage: local-env.sh FILE [CONFIG [TARGET]]}
config=${2:-pi-gen1} target=${3:-$TESTBED_PI}
umask 077
rm -f "$out"
exec >"$out"
# dotenv: a double-quoted value may span lines; \ and " are escaped.
quote() { local v=${1//\\/\\\\}; v=${v//\"/\\\"}; printf '"%s"' "$v"; }
cat <<ENV
INPUT_FLAKE=$(quote "$TESTBED_FIXTURE#$config")
INPUT_MODE=switch
INPUT_TARGET-HOST=$(quote "$target")
INPUT_JUMP-HOST=$(quote "$TESTBED_JUMP")
INPUT_SSH-PRIVATE-KEY=$(quote "$(cat "$TESTBED_KEYS/deploy")")
INPUT_KNOWN-HOSTS=$(quote "$(cat "$TESTBED_KNOWN_HOSTS")")
INPUT_NIX-OPTIONS="substituters ="
ENV
