# Reboots the target two seconds after this command returned (so its SSH session ends normally
# first, and logind cannot end the reboot with it): as a transient systemd timer when systemd runs
# the target, else in a new session with setsid + nohup.
# With NEW PREVIOUS GENERATION SECONDS it first writes the boot trial record that the target's
# boot trial (nixos/boot-trial.sh) reads in the next boot: written and the reboot scheduled in one
# command, so no trial is left without its reboot (the record is removed when scheduling fails).
# usage: sh -c REBOOT sh [NEW PREVIOUS GENERATION SECONDS]
# shellcheck shell=sh
trial_dir=/nix/var/nix-deploy-action
if [ $# -eq 4 ]; then
  mkdir -p "$trial_dir" || exit 1
  rm -f "$trial_dir/boot-trial.reject" "$trial_dir/boot-trial.rolled-back"
  printf 'new=%s\nprevious=%s\nprevious-generation=%s\nconfirm-seconds=%s\n' "$1" "$2" "$3" "$4" \
    >"$trial_dir/boot-trial.tmp" || exit 1
  mv -f "$trial_dir/boot-trial.tmp" "$trial_dir/boot-trial" || exit 1
  echo trial
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
