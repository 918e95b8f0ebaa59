# The deploy's steps in a boot trial (see nixos/boot-trial.sh, which waits for them on the target):
#   check-in  the deploy's first login after the boot (protocol 2): boot-trial renamed to
#             boot-trial.reached, which starts the trial's second window (the checks and the
#             confirmation), and this boot's id in boot-trial.checked-in. Prints reached (also when
#             an earlier login of this boot already did), expired when the trial gave up first (the
#             same rename: exactly one wins) or the check-in was another boot's, or none.
#   confirm   the record renamed to boot-trial.confirmed: prints confirmed, or expired when the
#             target's trial had already given up (the same rename: exactly one wins) or this is
#             not the boot of the check-in (the target rebooted after the checks); sent again after
#             a lost answer, it answers as the first one did. A trial of
#             protocol 1 has no check-in: its record is renamed as it is. A trial that booted the
#             new system once (a one-shot entry, reboot.sh) then makes it the default: its
#             generation the profile, its boot entry the default (confirmed), or, when that fails,
#             prints not-default and why (the new system runs; the next boot runs the previous one).
#   reject    asks the trial to go back to the previous system now: prints rejected
#   fell-back the target booted the previous system, not the trial's one-shot entry: the record,
#             still pending (no boot of the new system ended it), is kept as boot-trial.fell-back
#             with the reason in boot-trial.rolled-back. Prints fell-back (the boot loader ran the
#             entry once: it emptied the one-shot file), not-run (the file is as written: the boot
#             loader's hook did not run), or none (no such trial).
# usage: sh -c BOOT_TRIAL sh check-in|confirm|reject|fell-back
# shellcheck shell=sh
trial_dir=/nix/var/nix-deploy-action
P=/nix/var/nix/profiles/system
booted_link=/run/booted-system
boot_id_file=/proc/sys/kernel/random/boot_id
field() { sed -n "s/^$1=//p" "$2" | head -n 1; }
# The boot the check-in was made in (boot-trial.checked-in): the deploy's checks ran in that boot,
# and only it is confirmed. A step sent again after a reboot (its answer lost) finds another boot.
this_boot=$(cat "$boot_id_file" 2>/dev/null)
checked_in=$trial_dir/boot-trial.checked-in
same_boot() { [ -n "$this_boot" ] && [ "$(cat "$checked_in" 2>/dev/null)" = "$this_boot" ]; }
case "$1" in
  check-in)
    if mv "$trial_dir/boot-trial" "$trial_dir/boot-trial.reached" 2>/dev/null; then
      echo "$this_boot" >"$checked_in"
      echo reached
    elif [ -e "$trial_dir/boot-trial.reached" ] && { same_boot || [ ! -e "$checked_in" ]; }; then echo reached
    elif [ -e "$trial_dir/boot-trial.expired" ] || [ -e "$trial_dir/boot-trial.reached" ]; then echo expired
    else echo none; fi ;;
  confirm)
    c=$trial_dir/boot-trial.confirmed
    # One at a time (a confirmation sent again while a slow one still writes its boot entry): a
    # flock of its own (the deploy lock's would stop its renewals for as long).
    exec 8>>"$trial_dir/trial-confirm.flock" && flock -w 170 8 || exit 1
    # Only in the boot the deploy checked (protocol 2: its check-in's); also a confirmation sent
    # again there (its answer was lost): this trial's record confirmed already (reboot.sh removes
    # an earlier trial's), of the booted system; its steps below are idempotent.
    if [ -e "$checked_in" ] && ! same_boot; then
      echo expired
    elif mv "$trial_dir/boot-trial.reached" "$c" 2>/dev/null || mv "$trial_dir/boot-trial" "$c" 2>/dev/null ||
      { [ -f "$c" ] && [ "$(field new "$c")" = "$(readlink -f "$booted_link")" ]; }; then
      g=$(field new-generation "$c") new=$(field new "$c") pg=$(field previous-generation "$c")
      if [ -z "$g" ]; then echo confirmed
      elif [ "$(readlink -f "$P-$g-link")" = "$new" ] && nix-env -p "$P" --switch-generation "$g" >&2; then
        if "$new/bin/switch-to-configuration" boot >&2; then echo confirmed
        else
          # The profile back with the boot entry (the previous system): what the next boot runs, and
          # what a deploy of the new system sees as still to do.
          if [ -n "$pg" ]; then nix-env -p "$P" --switch-generation "$pg" >&2; fi
          echo not-default
        fi
      else echo not-default; fi
    else echo expired; fi ;;
  reject)
    touch "$trial_dir/boot-trial.reject" && echo rejected ;;
  fell-back)
    t=$trial_dir/boot-trial f=$trial_dir/boot-trial.fell-back
    # One at a time with the target's own trial, which settles it the same way (nixos/boot-trial.sh),
    # under the flock of the deploy lock's operations (lock.sh).
    exec 8>>"$trial_dir/lock.flock" && flock -w 30 8 || exit 1
    once=''
    [ -f "$t" ] && once=$(field once "$t")
    # Only an absolute path of plain characters (reboot.sh wrote it) is touched.
    case $once in *..* | *[!A-Za-z0-9+._/-]* | [!/]*) once='' ;; esac
    if [ -z "$once" ] || [ "$(readlink -f "$booted_link")" = "$(field new "$t")" ]; then
      if [ -f "$f" ] && [ -n "$(field verdict "$f")" ]; then field verdict "$f"; else echo none; fi
      exit 0
    fi
    if [ -s "$once" ]; then
      verdict=not-run why="the boot loader did not boot the new system's one-shot entry: its hook left $once as written"
    else
      verdict=fell-back why="the new system did not reach user space in its one boot (a kernel panic, an initrd that could not mount its root, or a hang ended by the watchdog): the next boot ran the previous system"
    fi
    # Never a one-shot boot later, whatever the hook did.
    [ ! -e "$once" ] || : >"$once"
    echo "$why" >"$trial_dir/boot-trial.rolled-back"
    { cat "$t" && echo "verdict=$verdict"; } >"$f.tmp" && mv -f "$f.tmp" "$f" && rm -f "$t" && echo "$verdict" ;;
  *) echo "usage: boot-trial check-in|confirm|reject|fell-back" >&2; exit 2 ;;
esac
