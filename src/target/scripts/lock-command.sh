# One operation on the deploy lock (lock.sh) for the action: acquire, renew or release.
# usage: sh -c LOCK sh acquire|renew|release LOCK_DIR ID LEASE DESCRIPTION
# shellcheck shell=sh disable=SC2034
lock_dir=$2 lock_id=$3 lease=$4 lock_desc=$5
lock_op "$1"
