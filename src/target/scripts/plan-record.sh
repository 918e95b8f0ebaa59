# Writes this machine's deploy-plan record from stdin (record.sh) while the deploy lock is LOCK_ID's.
# Prints "written" or "not-held".
# usage: sh -c PLAN_RECORD sh LOCK_DIR LOCK_ID < RECORD
# shellcheck shell=sh
plan_record "$1" "$2"
