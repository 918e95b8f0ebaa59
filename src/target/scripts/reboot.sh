# Reboots the target two seconds after this command returned (so its SSH session ends normally
# first, and logind cannot end the reboot with it): as a transient systemd timer when systemd runs
# the target, else in a new session with setsid + nohup.
# With NEW PREVIOUS GENERATION SECONDS LOGIN_SECONDS ONCE it first writes the boot trial record that
# the target's boot trial (nixos/boot-trial.sh) reads in the next boot (LOGIN_SECONDS '' for a trial
# of protocol 1: one window), and with LOCK_DIR LOCK_ID LEASE WINDOW it has the deploy lock held
# through the boot while the trial is pending (lock.sh's hold-through-boot): no other run deploys
# in between, nor is cut by the trial's reboot back. Written and the reboot scheduled in one
# command, so no trial is left without its reboot (the record is removed when anything fails, and
# nothing reboots when the lock is no longer this run's).
# ONCE (else ''): the file the boot loader's one-shot hook reads (nixos/boot-once.sh: U-Boot loads
# it and empties it before it boots). The new system, activated as the profile and boot default,
# becomes a one-shot entry instead: the previous system is made the default again (profile and
# boot entry), the new one's generation stays in the boot menu, and ONCE names it. A new system
# that never reaches user space (a kernel panic) is left by the next reset, which boots the
# default. The confirmation makes the new system the default (boot-trial-steps.sh). When a step of this
# fails, the new system is made the default again and the trial goes on without it (prints
# once-failed and why).
# usage: sh -c REBOOT sh [NEW PREVIOUS GENERATION SECONDS LOGIN_SECONDS ONCE [LOCK_DIR LOCK_ID LEASE WINDOW]]
# shellcheck shell=sh disable=SC2034 # lease, lock_desc and lock_window are read by lock_op (lock.sh)
trial_dir=/nix/var/nix-deploy-action
P=/nix/var/nix/profiles/system
# The generation number of the profile's link (system-N-link), or fails.
profile_gen() {
  g=$(readlink "$P") && g=${g#system-} && g=${g%-link} && case $g in '' | *[!0-9]*) return 1 ;; esac
}
# once_entry NEW PREVIOUS GENERATION: the previous system the default again, NEW's generation left
# in the boot menu (sets new_gen and prev_gen); undone (NEW the default again) when a step fails.
once_entry() {
  if ! profile_gen || [ "$(readlink -f "$P")" != "$1" ]; then
    echo "the system profile is not the new system" >&2
    return 1
  fi
  new_gen=$g
  if { if [ -n "$3" ] && [ "$(readlink -f "$P-$3-link")" = "$2" ]; then nix-env -p "$P" --switch-generation "$3"
    else nix-env -p "$P" --set "$2"; fi; } && profile_gen && prev_gen=$g &&
    "$2/bin/switch-to-configuration" boot && {
      grep -qx "LABEL nixos-$new_gen" /boot/extlinux/extlinux.conf ||
        { echo "the boot menu (/boot/extlinux/extlinux.conf) has no entry nixos-$new_gen" >&2; false; }
    }; then
    return 0
  fi
  undo_once "$1"
  return 1
}
# undo_once NEW: NEW the profile and boot default again, as the activation left it.
undo_once() {
  nix-env -p "$P" --switch-generation "$new_gen"
  "$1/bin/switch-to-configuration" boot
}
# write_record NEW PREVIOUS SECONDS LOGIN_SECONDS [ONCE]: the trial record, replaced in one rename.
write_record() {
  { printf 'new=%s\nprevious=%s\nprevious-generation=%s\nconfirm-seconds=%s\n' "$1" "$2" "$prev_gen" "$3" &&
    if [ -n "$4" ]; then printf 'login-seconds=%s\n' "$4"; fi &&
    if [ -n "${5:-}" ]; then printf 'once=%s\nnew-generation=%s\n' "$5" "$new_gen"; fi; } >"$trial_dir/boot-trial.tmp" &&
    mv -f "$trial_dir/boot-trial.tmp" "$trial_dir/boot-trial"
}
# No reboot after all: no trial record, no one-shot entry for a later boot to find (the previous
# system stays the default).
abandon_trial() {
  rm -f "$trial_dir/boot-trial"
  if [ -n "${new_gen:-}" ]; then rm -f "$once_file"; fi
}
once_answer=''
if [ $# -ge 6 ]; then
  mkdir -p "$trial_dir" || exit 1
  # What an earlier trial left: this trial's files say only what this one did.
  for f in reject rolled-back reached confirmed expired stale invalid fell-back boots checked-in; do rm -f "$trial_dir/boot-trial.$f"; done
  prev_gen=$3 new_gen='' once_file=$6
  # The lock first: its lease renewed before the slow steps below (a boot menu written to an SD
  # card), and held through the boot.
  if [ $# -ge 10 ]; then
    lock_dir=$7 lock_id=$8 lease=$9 lock_window=${10} lock_desc=''
    if [ "$(lock_op hold-through-boot)" != held-through-boot ]; then
      echo "the deploy lock is no longer this run's: not rebooting" >&2
      exit 1
    fi
  fi
  if [ -n "$once_file" ] && ! once_entry "$1" "$2" "$3" >"$trial_dir/boot-once.log" 2>&1; then
    new_gen='' prev_gen=$3
    once_answer="once-failed $(tail -n 3 "$trial_dir/boot-once.log" | tr '\n' ' ')"
  fi
  rm -f "$trial_dir/boot-once.log"
  if [ -n "$new_gen" ]; then write_record "$1" "$2" "$4" "$5" "$once_file" || { undo_once "$1" >&2; exit 1; }
  else write_record "$1" "$2" "$4" "$5" || exit 1; fi
  # The one-shot file last, just before the reboot is scheduled: a command cut off before it
  # leaves no entry for a later boot to run without this trial's record.
  if [ -n "$new_gen" ]; then
    if printf 'nda_label=nixos-%s\n' "$new_gen" >"$once_file.tmp" && mv -f "$once_file.tmp" "$once_file" && sync; then
      once_answer=once
    else
      rm -f "$once_file.tmp" "$once_file"
      undo_once "$1" >&2
      new_gen='' prev_gen=$3
      write_record "$1" "$2" "$4" "$5" || exit 1
      once_answer="once-failed cannot write $once_file"
    fi
  fi
fi
if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then
  if ! systemd-run --on-active=2 --quiet --collect --unit="nix-deploy-action-reboot-$$" systemctl reboot; then
    abandon_trial
    exit 1
  fi
else
  nohup setsid sh -c 'sleep 2; reboot' </dev/null >/dev/null 2>&1 &
fi
# What happened, once the reboot is scheduled (nothing printed before: a closed channel would end
# this command half-way).
if [ -n "$once_answer" ]; then echo "$once_answer"; fi
echo scheduled
