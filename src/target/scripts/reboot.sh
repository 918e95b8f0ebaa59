# Reboots the target two seconds after this command returned (so its SSH session ends normally
# first, and logind cannot end the reboot with it): as a transient systemd timer when systemd runs
# the target, else in a new session with setsid + nohup.
# With NEW PREVIOUS GENERATION SECONDS LOGIN_SECONDS it first writes the boot trial record that the
# target's boot trial (nixos/boot-trial.sh) reads in the next boot (LOGIN_SECONDS '' for a trial of
# protocol 1: one window), and with LOCK_DIR LOCK_ID LEASE WINDOW it has the deploy lock held
# through the boot while the trial is pending (lock.sh's hold-through-boot): no other run deploys
# in between, nor is cut by the trial's reboot back. Written and the reboot scheduled in one
# command, so no trial is left without its reboot (the record is removed when anything fails, and
# nothing reboots when the lock is no longer this run's).
# usage: sh -c REBOOT sh [NEW PREVIOUS GENERATION SECONDS LOGIN_SECONDS [LOCK_DIR LOCK_ID LEASE WINDOW]]
# shellcheck shell=sh disable=SC2034 # lease, lock_desc and lock_window are read by lock_op (lock.sh)
trial_dir=/nix/var/nix-deploy-action
if [ $# -ge 5 ]; then
  mkdir -p "$trial_dir" || exit 1
  # What an earlier trial left: this trial's files say only what this one did.
  for f in reject rolled-back reached confirmed expired stale invalid; do rm -f "$trial_dir/boot-trial.$f"; done
  { printf 'new=%s\nprevious=%s\nprevious-generation=%s\nconfirm-seconds=%s\n' "$1" "$2" "$3" "$4" &&
    if [ -n "$5" ]; then printf 'login-seconds=%s\n' "$5"; fi; } >"$trial_dir/boot-trial.tmp" || exit 1
  mv -f "$trial_dir/boot-trial.tmp" "$trial_dir/boot-trial" || exit 1
  echo trial
  if [ $# -ge 9 ]; then
    lock_dir=$6 lock_id=$7 lease=$8 lock_window=$9 lock_desc=''
    if [ "$(lock_op hold-through-boot)" != held-through-boot ]; then
      rm -f "$trial_dir/boot-trial"
      echo "the deploy lock is no longer this run's: not rebooting" >&2
      exit 1
    fi
    echo lock-held
  fi
fi
if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then
  if ! systemd-run --on-active=2 --quiet --collect --unit="nix-deploy-action-reboot-$$" systemctl reboot; then
    rm -f "$trial_dir/boot-trial"
    exit 1
  fi
  echo scheduled
else
  nohup setsid sh -c 'sleep 2; reboot' </dev/null >/dev/null 2>&1 &
  echo scheduled
fi
