# Reboots the target two seconds after this command returned (so its SSH session ends normally
# first, and logind cannot end the reboot with it): as a transient systemd timer when systemd runs
# the target, else in a new session with setsid + nohup.
# usage: sh -c REBOOT sh
# shellcheck shell=sh
if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then
  systemd-run --on-active=2 --quiet --collect --unit="nix-deploy-action-reboot-$$" systemctl reboot && echo scheduled
else
  nohup setsid sh -c 'sleep 2; reboot' </dev/null >/dev/null 2>&1 &
  echo scheduled
fi
