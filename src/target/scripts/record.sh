# The deploy plan's record (src/target/plan-record.ts), sourced by plan-record.sh and wrap-up.sh:
#   plan_record LOCK_DIR LOCK_ID < RECORD -> "written" | "not-held"; fails when it cannot write
#   the record or cannot check the lock
# Which plan and shard last deployed here, how far it got, and what the machine ran before. Root's
# file in root's directory (the lock's), replaced whole (a rename): a report job reading it finds
# the old record or the new one, never half of one (a record cut short lacks its last line, end=1,
# and is not read); probe.sh prints it. Only while the deploy lock is LOCK_ID's (lock.sh's check): a
# run that lost it never writes over the record of the run that holds it now.
# shellcheck shell=sh disable=SC2034 # lease and lock_desc are read by lock_op (lock.sh)
plan_record() {
  lock_dir=$1 lock_id=$2 lease=0 lock_desc=''
  # A check that could not be made (no flock, its file busy for long) is a failure, not a lost lock.
  record_lock=$(lock_op check) || return 1
  if [ "$record_lock" != held ]; then
    echo not-held
    return 0
  fi
  # A file of its own for each write (two writers never share one; mktemp makes it 0600), renamed over the record.
  record_tmp=$(mktemp "${lock_dir%/*}/plan-record.XXXXXX") || return 1
  if cat >"$record_tmp" && mv -f "$record_tmp" "${lock_dir%/*}/plan-record"; then
    echo written
  else
    rm -f "$record_tmp"
    return 1
  fi
}
