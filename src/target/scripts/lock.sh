# The deploy lock's operations, shared by every script that touches the lock (see lock.ts for why it
# is kept this way). Sourced: the caller sets lock_dir, lock_id, lease and lock_desc.
#   lock_op acquire -> "acquired" | "held" ID SECONDS_LEFT DESCRIPTION (one per line)
#   lock_op renew   -> "renewed" | "lost"
#   lock_op release -> "released" | "not-held"
# Owner file: line 1 the holder's id; line 2 `v2 BOOT_ID EXPIRY_UPTIME_SECONDS` (an older action wrote
# the expiry in epoch seconds: honoured by the wall clock it names); line 3 who it is.
# shellcheck shell=sh disable=SC2154
lock_op() (
  verb=$1
  base=$(dirname "$lock_dir")
  mkdir -p "$base" || exit 2
  command -v flock >/dev/null 2>&1 || { echo "flock (util-linux) is not on the target's PATH" >&2; exit 5; }
  exec 9>>"$base/lock.flock" || exit 2
  flock -w 30 9 || { echo "$base/lock.flock stayed locked for 30 s" >&2; exit 6; }
  now=$(cut -d. -f1 /proc/uptime)
  boot=$(cat /proc/sys/kernel/random/boot_id)
  owner=$(sed -n 1p "$lock_dir/owner" 2>/dev/null)
  set -f
  # shellcheck disable=SC2046 # the lease line's words
  set -- $(sed -n 2p "$lock_dir/owner" 2>/dev/null)
  left=-1
  if [ $# = 3 ] && [ "$1" = v2 ]; then
    case $3 in *[!0-9]*|'') ;; *) if [ "$2" = "$boot" ]; then left=$(($3 - now)); fi ;; esac
  elif [ $# = 1 ]; then
    case $1 in *[!0-9]*|'') ;; *) left=$(($1 - $(date +%s))) ;; esac
  fi
  write_owner() {
    mkdir -p "$lock_dir" &&
      printf '%s\nv2 %s %s\n%s\n' "$lock_id" "$boot" "$((now + lease))" "$1" >"$lock_dir/owner.tmp" &&
      mv -f "$lock_dir/owner.tmp" "$lock_dir/owner"
  }
  case $verb in
    acquire)
      if [ "$owner" = "$lock_id" ] || [ -z "$owner" ] || [ "$left" -lt 0 ]; then
        write_owner "$lock_desc" && echo acquired
      else
        printf 'held\n%s\n%s\n%s\n' "$owner" "$left" "$(sed -n 3p "$lock_dir/owner")"
      fi ;;
    renew)
      if [ "$owner" = "$lock_id" ]; then write_owner "$(sed -n 3p "$lock_dir/owner")" && echo renewed; else echo lost; fi ;;
    release)
      if [ "$owner" = "$lock_id" ]; then rm -f "$lock_dir/owner"; rmdir "$lock_dir" 2>/dev/null; echo released; else echo not-held; fi ;;
  esac
)
