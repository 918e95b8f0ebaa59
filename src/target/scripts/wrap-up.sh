# A deploy's last command on the target, once its activation has an outcome: what were five round
# trips in one. With a record lock, first writes the deploy plan's record from stdin under it, as
# plan-record.sh does (record.sh: record-write=written, not-held or failed; not a plan-* key, which
# are probe.sh's lines of the record). Removes the agent's
# directory (the agent then leaves the lock to the action) and this run's GC root (the profile or
# /run/current-system holds the system now), prints the state the action verifies (probe_state),
# and releases the deploy lock last, so nothing of this deploy is still read or written on the
# target once another run may take it.
# usage: sh -c WRAP_UP sh AGENT_DIR GC_ROOT LOCK_DIR LOCK_ID [RECORD_LOCK_DIR RECORD_LOCK_ID < RECORD]
#   (an empty one: nothing to do for it)
# shellcheck shell=sh disable=SC2034 # lease and lock_desc are read by lock_op (lock.sh)
if [ -n "${5-}" ]; then printf 'record-write=%s\n' "$(plan_record "$5" "$6" || echo failed)"; fi
[ -z "$1" ] || rm -rf "$1"
[ -z "$2" ] || rm -f "$2"
probe_state
if [ -n "$3" ]; then
  lock_dir=$3 lock_id=$4 lease=0 lock_desc=''
  printf 'lock-release=%s\n' "$(lock_op release)"
fi
