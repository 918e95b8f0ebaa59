# Writes this machine's deploy-plan record (src/target/plan-record.ts) from stdin: which plan and
# shard last deployed here, how far it got, and what the machine ran before. Root's file in root's
# directory (the lock's), replaced whole (a rename): a report job reading it finds the old record or
# the new one, never half of one (a record cut short lacks its last line, end=1, and is not read);
# probe.sh prints it. Only while the deploy lock is LOCK_ID's (lock.sh's check): a run that lost it
# never writes over the record of the run that holds it now. Prints "written" or "not-held".
# usage: sh -c PLAN_RECORD sh LOCK_DIR LOCK_ID < RECORD
# shellcheck shell=sh disable=SC2034 # lease and lock_desc are read by lock_op (lock.sh)
set -eu
lock_dir=$1 lock_id=$2 lease=0 lock_desc=''
answer=$(lock_op check)
if [ "$answer" != held ]; then echo not-held; exit 0; fi
d=${lock_dir%/*}
umask 077
# A file of its own for each write (two writers never share one), renamed over the record.
t=$(mktemp "$d/plan-record.XXXXXX")
if cat >"$t" && mv -f "$t" "$d/plan-record"; then echo written; else rm -f "$t"; exit 1; fi
