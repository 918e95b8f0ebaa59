#!/bin/sh
# nix-deploy-action's boot trial, run at every boot by the NixOS module next to it (boot-trial.nix).
#
# A new system that boots but cannot be reached (sshd broken, the network down) must not strand a
# machine nobody can reach by hand. extlinux, a Raspberry Pi's boot loader, has no one-shot boot
# entry, so the action makes the new system the default (or, with boot-once.sh's U-Boot hook, a
# one-shot entry while the previous system stays the default) and, in the same command that
# schedules the reboot, writes a trial record (STATE_DIR/boot-trial): the new system, the system to
# go back to and the trial's two windows. In the boot that runs the new system this script waits:
#   1. up to login-seconds (the deploy's reboot-timeout) for the deploy's first login, which renames
#      the record to boot-trial.reached: a network that comes up slowly (Wi-Fi, a tunnel) is waited
#      for, not mistaken for a broken system;
#   2. then up to confirm-seconds for the deploy's verdict: boot-trial.reached renamed to
#      boot-trial.confirmed (its health checks passed), or boot-trial.reject (they failed).
# Unconfirmed in either window, or rejected, it puts the system profile and the boot entry back on
# the previous system and reboots into it. A record for another system than the one booted is over
# (the boot loader fell back, or it is left from an interrupted deploy); a one-shot trial found in
# a boot of the previous system is settled as fell-back: the new system never reached this script.
#
# A trial runs in one boot of the new system: found pending again in a later boot of it (boot-trial
# or boot-trial.reached, and boot-trial.boots names another boot of it), a reboot cut it (a power
# cut, a crash, a system that reboots itself), and it goes back at once: waited for again, the
# windows would start over at every boot; so does one checked in in another boot (whether or not
# this script ran there). Found checked in at its first boot (the deploy logged in before this unit
# started), it waits for the verdict. A one-shot trial checked in, found in a boot
# of the previous system, is over: the boot loader ran the default.
#
# Each window ends with a rename of the file the deploy renames in the same step (boot-trial, then
# boot-trial.reached): exactly one of the deploy and this script wins. A record without
# login-seconds (an action before protocol 2) has one window, confirm-seconds, ended by the
# deploy's rename of boot-trial to boot-trial.confirmed, as before.
# Needs: sh, sed, head, cat, stat, readlink, mv, rm, sleep, flock, nix-env and systemctl (or reboot) on PATH.
# The environment overrides the paths (the project's unit tests use temporary ones).
# nix-deploy-action boot trial protocol: 2
set -u
dir=${NDA_STATE_DIR:-/nix/var/nix-deploy-action}
P=${NDA_SYSTEM_PROFILE:-/nix/var/nix/profiles/system}
booted_link=${NDA_BOOTED_SYSTEM:-/run/booted-system}
store=${NDA_STORE_DIR:-/nix/store}
trial=$dir/boot-trial
reached=$dir/boot-trial.reached
# While this runs (or goes back), its boot id: the deploy lock stays held for it (lock.sh).
active=$dir/boot-trial.active
boot_id_file=${NDA_BOOT_ID_FILE:-/proc/sys/kernel/random/boot_id}
reject=$dir/boot-trial.reject
# "NEW RECORD BOOT_ID" for each boot a trial's script ran in (RECORD: the record file's inode and
# time, which the deploy's renames keep and a new trial's record does not have; reboot.sh also
# removes the file with a new trial).
boots=$dir/boot-trial.boots
# The boot the deploy checked in in (boot-trial-steps.sh check-in; reboot.sh removes it with a new trial).
checked_in=$dir/boot-trial.checked-in

say() { echo "nix-deploy-action boot trial: $*"; }
field() { sed -n "s/^$1=//p" "$rec" | head -n 1; }
digits() { case $1 in '' | *[!0-9]*) return 1 ;; esac; }
# A store path itself (no path inside one), in the characters Nix allows in names.
store_path() {
  case $1 in
    "$store"/*/* | *[!A-Za-z0-9+._?=/-]*) return 1 ;;
    "$store"/?*) return 0 ;;
    *) return 1 ;;
  esac
}

# An absolute path in plain characters, no `..` (the one-shot file).
plain_path() {
  case $1 in
    *..* | *[!A-Za-z0-9+._/-]*) return 1 ;;
    /?*) return 0 ;;
    *) return 1 ;;
  esac
}

# A marker left by a trial that went back (it reboots while active) is another boot's.
rm -f "$active"
# The pending record: before the deploy's check-in, or after it.
rec=$trial
[ -f "$rec" ] || rec=$reached
if [ ! -f "$rec" ]; then
  rm -f "$boots"
  say "no trial pending"
  exit 0
fi
new=$(field new) prev=$(field previous) gen=$(field previous-generation) secs=$(field confirm-seconds)
login=$(field login-seconds) once=$(field once)
if ! store_path "$new" || ! store_path "$prev" || ! digits "$secs" || { [ -n "$gen" ] && ! digits "$gen"; } ||
  { [ -n "$login" ] && ! digits "$login"; } || { [ -n "$once" ] && ! plain_path "$once"; }; then
  say "the trial record is not readable: kept as $trial.invalid, nothing done"
  mv -f "$rec" "$trial.invalid"
  exit 1
fi
booted=$(readlink -f "$booted_link" 2>/dev/null || true)
if [ -n "$once" ] && [ "$booted" = "$prev" ]; then
  # The new system was a one-shot entry (the previous one stayed the default) and this boot is the
  # previous system's: the new one never got here. Settled as the deploy's `fell-back` step does
  # (target/scripts/boot-trial-steps.sh in the action), one at a time with it.
  exec 8>>"$dir/lock.flock" && flock -w 30 8
  if [ -f "$reached" ]; then
    why="the new system rebooted after the deploy logged in, before it was confirmed (a power cut, a crash): the boot loader ran the previous system, still the default"
    echo "$why" >"$dir/boot-trial.rolled-back"
    mv -f "$reached" "$trial.expired" && say "$why"
  elif [ -f "$trial" ]; then
    if [ -s "$once" ]; then
      verdict=not-run why="the boot loader did not boot the new system's one-shot entry: its hook left $once as written"
    else
      verdict=fell-back why="the new system did not reach user space in its one boot (a kernel panic, an initrd that could not mount its root, or a hang ended by the watchdog): the next boot ran the previous system"
    fi
    [ ! -e "$once" ] || : >"$once"
    echo "$why" >"$dir/boot-trial.rolled-back"
    { cat "$trial" && echo "verdict=$verdict"; } >"$trial.fell-back.tmp" && mv -f "$trial.fell-back.tmp" "$trial.fell-back" && rm -f "$trial"
    say "$why"
  fi
  rm -f "$boots"
  exit 0
fi
if [ "$booted" != "$new" ]; then
  say "this boot runs ${booted:-no known system}, not the trial's $new: the trial is over"
  mv -f "$rec" "$trial.stale" 2>/dev/null || true
  rm -f "$boots"
  exit 0
fi

this_boot=$(cat "$boot_id_file" 2>/dev/null || true)
rec_id=$(stat -c %i.%Y "$rec" 2>/dev/null || true)
rec_id=${rec_id:--}
cut=''
if [ -f "$boots" ]; then
  while read -r b_new b_rec b_id; do
    if [ "$b_new" = "$new" ] && [ "$b_rec" = "$rec_id" ] && [ "$b_rec" != - ] && [ "$b_id" != "$this_boot" ]; then cut=yes; fi
  done <"$boots"
fi
# Checked in in another boot: a reboot cut that one too, also when this script had not run in it
# yet (the deploy can log in before this unit starts, and the machine reboot right after).
if [ "$rec" = "$reached" ] && [ -n "$this_boot" ] && [ -s "$checked_in" ] &&
  [ "$(cat "$checked_in" 2>/dev/null)" != "$this_boot" ]; then cut=yes; fi
echo "$new $rec_id $this_boot" >>"$boots"
# This boot's id and this script's pid: the deploy lock stays held while it runs (lock.sh).
echo "$this_boot $$" >"$active"
confirmed() {
  rm -f "$active" "$boots"
  say "confirmed"
  exit 0
}
# wait FILE SECONDS: until FILE is gone (0), a rejection (1) or SECONDS have passed (2).
wait_gone() {
  waited=0
  while [ "$waited" -lt "$2" ]; do
    [ -e "$1" ] || return 0
    [ -e "$reject" ] && return 1
    sleep 1
    waited=$((waited + 1))
  done
  return 2
}
# expire FILE: the window's end, unless the deploy renamed FILE first (then it is not over).
expire() { mv "$1" "$trial.expired" 2>/dev/null; }

why=''
if [ -n "$cut" ]; then
  # Claimed as a window's end is (the deploy's rename may have come first: then it is its).
  mv "$trial" "$trial.expired" 2>/dev/null || mv "$reached" "$trial.expired" 2>/dev/null || confirmed
  why="its trial began in an earlier boot and a reboot cut it (a power cut, a crash, or the system rebooted itself) before the deploy confirmed it"
elif [ -z "$login" ]; then
  say "booted $new: waiting up to $secs s for the deploy to confirm it"
  wait_gone "$trial" "$secs" && confirmed
  expire "$trial" || confirmed
  phase=confirm
else
  phase=login
  if [ "$rec" = "$reached" ]; then
    # The deploy checked in before this unit started.
    phase=confirm
  elif say "booted $new: waiting up to $login s for the deploy to log in" && wait_gone "$trial" "$login"; then
    # Logged in and already confirmed (fast checks) between two looks: both steps were seen at once.
    [ -e "$reached" ] || { say "the deploy logged in"; confirmed; }
    phase=confirm
  elif ! expire "$trial"; then
    phase=confirm
  fi
  if [ "$phase" = confirm ]; then
    say "the deploy logged in: waiting up to $secs s for its checks and confirmation"
    wait_gone "$reached" "$secs" && confirmed
    expire "$reached" || confirmed
  fi
fi
if [ -n "$why" ]; then :
elif [ -e "$reject" ]; then why="the deploy rejected it"
elif [ "$phase" = login ]; then why="the deploy did not log in within $login s"
else why="not confirmed within $secs s"; fi
rm -f "$reject"
say "$why: going back to $prev"

ok=0
# The profile as it was: its previous generation when that still holds the previous system, else
# the previous system set as a new generation.
if [ -n "$gen" ] && [ "$(readlink -f "$P-$gen-link" 2>/dev/null)" = "$prev" ]; then
  nix-env -p "$P" --switch-generation "$gen" || ok=1
else
  nix-env -p "$P" --set "$prev" || ok=1
fi
"$prev/bin/switch-to-configuration" boot || ok=1
if [ "$ok" != 0 ]; then
  rm -f "$active"
  say "could not make $prev the boot default again: staying on $new"
  exit 1
fi
echo "$why" >"$dir/boot-trial.rolled-back"
say "rebooting into $prev"
systemctl reboot 2>/dev/null || reboot
