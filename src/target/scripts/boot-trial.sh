# The deploy's steps in a boot trial (see nixos/boot-trial.sh, which waits for them on the target):
#   check-in  the deploy's first login after the boot (protocol 2): boot-trial renamed to
#             boot-trial.reached, which starts the trial's second window (the checks and the
#             confirmation). Prints reached (also when this or an earlier login already did),
#             expired when the trial gave up first (the same rename: exactly one wins), or none.
#   confirm   the record renamed to boot-trial.confirmed: prints confirmed, or expired when the
#             target's trial had already given up (the same rename: exactly one wins). A trial of
#             protocol 1 has no check-in: its record is renamed as it is.
#   reject    asks the trial to go back to the previous system now: prints rejected
# usage: sh -c BOOT_TRIAL sh check-in|confirm|reject
# shellcheck shell=sh
trial_dir=/nix/var/nix-deploy-action
case "$1" in
  check-in)
    if mv "$trial_dir/boot-trial" "$trial_dir/boot-trial.reached" 2>/dev/null || [ -e "$trial_dir/boot-trial.reached" ]; then
      echo reached
    elif [ -e "$trial_dir/boot-trial.expired" ]; then echo expired
    else echo none; fi ;;
  confirm)
    if mv "$trial_dir/boot-trial.reached" "$trial_dir/boot-trial.confirmed" 2>/dev/null ||
      mv "$trial_dir/boot-trial" "$trial_dir/boot-trial.confirmed" 2>/dev/null; then
      echo confirmed
    else echo expired; fi ;;
  reject)
    touch "$trial_dir/boot-trial.reject" && echo rejected ;;
  *) echo "usage: boot-trial check-in|confirm|reject" >&2; exit 2 ;;
esac
