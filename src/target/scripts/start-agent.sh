# Starts the agent (DIR/agent.sh) detached: as a transient systemd unit when systemd runs the target
# (checked by /run/systemd/system, as systemd itself does, not by whether systemd-run exists), else
# in a new session with setsid + nohup. Either way it survives the SSH session. First it renews the
# deploy lock: a run whose lock was taken over (its lease ran out) starts nothing ("lost-lock").
# Run again for the same directory, it starts nothing and says "started-already".
# usage: sh -c START_AGENT sh AGENT_OPTIONS...   (agent.sh's options; --dir and the lock's are read here)
# shellcheck shell=sh disable=SC2034 # lock_desc and lease are read by lock_op (lock.sh)
dir='' lock_dir='' lock_id='' lease=0 prev=''
for a in "$@"; do
  case $prev in
    --dir) dir=$a ;;
    --lock-dir) lock_dir=$a ;;
    --lock-id) lock_id=$a ;;
    --lease) lease=$a ;;
  esac
  prev=$a
done
lock_desc=''
if [ -n "$lock_dir" ] && [ "$(lock_op renew)" != renewed ]; then echo lost-lock; exit 0; fi
# At most one agent per directory: the action runs this again after a lost connection, not knowing
# whether the first try got through (mkdir is atomic; the second finds it and starts nothing).
if ! mkdir "$dir/started" 2>/dev/null; then echo started-already; exit 0; fi
sh_path=$(command -v sh)
if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then
  systemd-run --unit="nix-deploy-action-$(basename "$dir")" --collect --quiet --setenv=PATH="$PATH" \
    "$sh_path" "$dir/agent.sh" "$@" && echo started-systemd
else
  nohup setsid "$sh_path" "$dir/agent.sh" "$@" </dev/null >/dev/null 2>&1 &
  echo started-setsid
fi
