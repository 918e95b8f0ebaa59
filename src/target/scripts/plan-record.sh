# Writes this machine's deploy-plan record (src/target/plan-record.ts) from stdin: which plan and
# shard last deployed here, how far it got, and what the machine ran before. Root's file in root's
# directory (the lock's), replaced whole (a rename): a report job reading it finds the old record or
# the new one, never half of one; probe.sh prints it.
# usage: sh -c PLAN_RECORD sh < RECORD
# shellcheck shell=sh
set -eu
d=/nix/var/nix-deploy-action
umask 022
mkdir -p "$d"
cat >"$d/plan-record.tmp"
mv -f "$d/plan-record.tmp" "$d/plan-record"
