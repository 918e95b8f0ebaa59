# The deploy's verdict on a boot trial (see nixos/boot-trial.sh, which waits for it on the target):
#   confirm   the trial record renamed to boot-trial.confirmed: prints confirmed, or expired when
#             the target's trial had already given up (the same rename: exactly one wins)
#   reject    asks the trial to go back to the previous system now: prints rejected
# usage: sh -c BOOT_TRIAL sh confirm|reject
# shellcheck shell=sh
trial_dir=/nix/var/nix-deploy-action
case "$1" in
  confirm)
    if mv "$trial_dir/boot-trial" "$trial_dir/boot-trial.confirmed" 2>/dev/null; then echo confirmed; else echo expired; fi ;;
  reject)
    touch "$trial_dir/boot-trial.reject" && echo rejected ;;
  *) echo "usage: boot-trial confirm|reject" >&2; exit 2 ;;
esac
