# The deploy lock's operations, shared by every script that touches the lock (why it is kept this
# way: src/target/lock/on-target.ts). Sourced: the caller sets lock_dir, lock_id, lease and lock_desc.
#   lock_op acquire -> "acquired" | "held" ID SECONDS_LEFT DESCRIPTION (one per line)
#   lock_op renew   -> "renewed" | "lost"
#   lock_op release -> "released" | "not-held"
#   lock_op check   -> "held" | "not-held": whether lock_id holds it (its lease untouched)
#   lock_op hold-through-boot -> "held-through-boot" | "lost": the holder's lease (lock_window set)
#                      goes on in the next boot while its boot trial is pending (see below)
# Owner file: line 1 the holder's id; line 2 the lease; line 3 who it is. The lease:
#   `v2 BOOT_ID EXPIRY`        until EXPIRY (uptime seconds) of that boot; void in another boot
#   `v3 BOOT_ID EXPIRY WINDOW` the same, and, once EXPIRY has passed or in any later boot, while a
#                              boot trial is pending (boot-trial or boot-trial.reached beside the
#                              lock) and the uptime is below WINDOW, or while the trial's script
#                              runs in this boot (boot-trial.active holds its boot id and pid: it
#                              may be going back): a reboot on trial keeps the lock until the trial ends,
#                              also when its run renewed in the new boot and was then cancelled, or
#                              released it with the trial still to end (renew keeps a v3 lease v3;
#                              release then leaves it expired, WINDOW kept, for the trial alone).
#                              With lock_trial_system set (the run's system), acquire
#                              takes such a lock over when the pending trial is of that system and
#                              it is what booted (the run settles the trial: a re-run after a
#                              cancelled one, which sees the trial in the target's state)
#   `EXPIRY`                   an older action's, in epoch seconds: honoured by the wall clock, but
#                              never for more than an hour (after a reboot a Pi without RTC may
#                              start its clock far in the past)
# Every lock operation of a deploy runs this, on a Pi whose every process start costs: what the
# shell can do itself (the parent directory, the uptime, the owner file's lines), it does without
# starting one.
# shellcheck shell=sh disable=SC2154 # lock_dir, lock_id, lease, lock_desc, lock_window: the caller's
lock_op() (
  verb=$1
  # dirname's answer for the absolute paths the action gives (src/target/lock/on-target.ts: LOCK_DIR).
  base=${lock_dir%/*}
  [ -n "$base" ] || base=/
  [ -d "$base" ] || mkdir -p "$base" || exit 2
  command -v flock >/dev/null 2>&1 || { echo "flock (util-linux) is not on the target's PATH" >&2; exit 5; }
  exec 9>>"$base/lock.flock" || exit 2
  flock -w 30 9 || { echo "$base/lock.flock stayed locked for 30 s" >&2; exit 6; }
  read -r now _ </proc/uptime
  now=${now%%.*}
  read -r boot </proc/sys/kernel/random/boot_id
  # The owner file's three lines, as written (only lock_op writes or removes it, under the flock).
  owner='' lease_line='' desc=''
  if [ -f "$lock_dir/owner" ]; then
    { IFS= read -r owner; IFS= read -r lease_line; IFS= read -r desc; } 2>/dev/null <"$lock_dir/owner"
  fi
  set -f
  # shellcheck disable=SC2086 # the lease line's words
  set -- $lease_line
  # The trial's script ran in this boot (waiting, or going back): boot-trial.active holds the boot's
  # id (and the script's pid: an older module's has none).
  trial_running() { a='' ap='' && { read -r a ap <"$base/boot-trial.active"; } 2>/dev/null && [ "$a" = "$boot" ]; }
  trial_active() { [ -e "$base/boot-trial" ] || [ -e "$base/boot-trial.reached" ] || trial_running; }
  # ... and that script still runs (a script killed, its marker left, holds nothing past WINDOW).
  trial_script_alive() { trial_running && [ -n "$ap" ] && grep -q boot-trial "/proc/$ap/cmdline" 2>/dev/null; }
  # The pending trial's system, when it is what booted.
  trial_booted() {
    t='' n=''
    for f in "$base/boot-trial" "$base/boot-trial.reached"; do [ -f "$f" ] && t=$f; done
    [ -n "$t" ] || return 1
    while IFS= read -r l; do case $l in new=*) n=${l#new=} ;; esac; done <"$t"
    [ -n "$n" ] && [ "$(readlink -f /run/booted-system 2>/dev/null)" = "$n" ] && echo "$n"
  }
  left=-1 kind=''
  if [ $# = 3 ] && [ "$1" = v2 ]; then
    case $3 in *[!0-9]*|'') ;; *) if [ "$2" = "$boot" ]; then left=$(($3 - now)); fi ;; esac
  elif [ $# = 4 ] && [ "$1" = v3 ]; then
    case $3/$4 in *[!0-9/]*|/*|*/) ;; *)
      if [ "$2" = "$boot" ]; then left=$(($3 - now)); fi
      if [ "$left" -lt 0 ] && trial_active; then
        if [ "$4" -gt "$now" ]; then left=$(($4 - now)) kind=boot-trial
        elif trial_script_alive; then left=30 kind=boot-trial
        fi
      fi ;;
    esac
  elif [ $# = 1 ]; then
    case $1 in *[!0-9]*|'') ;; *) left=$(($1 - $(date +%s))); [ "$left" -le 3600 ] || left=-1 ;; esac
  fi
  # write_owner DESCRIPTION [LEASE_LINE]: this run's lease (v2 by default), replaced in one rename.
  write_owner() {
    mkdir -p "$lock_dir" &&
      printf '%s\n%s\n%s\n' "$lock_id" "${2:-v2 $boot $((now + lease))}" "$1" >"$lock_dir/owner.tmp" &&
      mv -f "$lock_dir/owner.tmp" "$lock_dir/owner"
  }
  case $verb in
    acquire)
      if [ "$owner" = "$lock_id" ] || [ -z "$owner" ] || [ "$left" -lt 0 ]; then
        write_owner "$lock_desc" && echo acquired
      elif [ "$kind" = boot-trial ] && [ -n "${lock_trial_system:-}" ] && [ "$(trial_booted)" = "$lock_trial_system" ]; then
        write_owner "$lock_desc" && echo acquired
      else
        printf 'held\n%s\n%s\n%s\n%s\n' "$owner" "$left" "$desc" "$kind"
      fi ;;
    renew)
      if [ "$owner" != "$lock_id" ]; then echo lost
      elif [ $# = 4 ] && [ "$1" = v3 ]; then write_owner "$desc" "v3 $boot $((now + lease)) $4" && echo renewed
      else write_owner "$desc" && echo renewed; fi ;;
    hold-through-boot)
      if [ "$owner" = "$lock_id" ]; then
        write_owner "$desc" "v3 $boot $((now + lease)) $lock_window" && echo held-through-boot
      else echo lost; fi ;;
    release)
      if [ "$owner" != "$lock_id" ]; then echo not-held
      elif [ $# = 4 ] && [ "$1" = v3 ] && trial_active; then write_owner "$desc" "v3 $boot $((now - 1)) $4" && echo released
      else rm -f "$lock_dir/owner"; rmdir "$lock_dir" 2>/dev/null; echo released; fi ;;
    check)
      if [ "$owner" = "$lock_id" ]; then echo held; else echo not-held; fi ;;
  esac
)
