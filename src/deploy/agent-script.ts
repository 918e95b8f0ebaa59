/**
 * Shell scripts run on the target. They are fixed text: every value from the action reaches them as
 * a positional parameter (quoted by shellCommand), never pasted into the script, so no input can
 * change what they do. They avoid bashisms: the target's /bin/sh may be any POSIX shell.
 */

/**
 * The activation agent, written to the target for each deploy (it is NOT part of the deployed
 * closure, so it works with any NixOS generation, as it is) and started detached from the SSH
 * session, so a dropped connection or an sshd restart by the new system does not stop it. It:
 *   1. sets the system profile (switch, boot) and records the new generation,
 *   2. runs switch-to-configuration with a time limit,
 *   3. if that fails, rolls back by itself;
 *   4. otherwise, when asked to wait (magic rollback, health checks), waits for the action's decision
 *      ("confirm" or "abort", written over a fresh connection) and rolls back on "abort" or when no
 *      decision comes in time (unless told to keep the new system then).
 * The action follows it through files in its run directory: log, generation, status, outcome.
 *
 * While it runs it renews the deploy lock's lease (LOCK_DIR, LOCK_ID; '' for none), so a second deploy
 * cannot start while this one may still roll back, even if the action is gone.
 *
 * usage: agent.sh DIR TOPLEVEL ACTION ACTIVATION_TIMEOUT WAIT_SECONDS ON_TIMEOUT PREV_CURRENT PREV_PROFILE PREV_GENERATION LOCK_DIR LOCK_ID LEASE_SECONDS
 *   ON_TIMEOUT: rollback | keep; PREV_*: the target's state before the deploy ('' when absent).
 */
export const AGENT_SCRIPT = String.raw`#!/bin/sh
set -u
dir=$1 top=$2 action=$3 activation_timeout=$4 wait_seconds=$5 on_timeout=$6
prev_current=$7 prev_profile=$8 prev_gen=$9
shift 9
lock_dir=$1 lock_id=$2 lease=$3
P=/nix/var/nix/profiles/system
exec >>"$dir/log" 2>&1 </dev/null

# Renews the deploy lock's lease if this deploy still holds it (same owner file format as LOCK_SCRIPT).
renew() {
  [ -n "$lock_dir" ] && [ "$(sed -n 1p "$lock_dir/owner" 2>/dev/null)" = "$lock_id" ] || return 0
  desc=$(sed -n 3p "$lock_dir/owner")
  printf '%s\n%s\n%s\n' "$lock_id" "$(( $(date +%s) + lease ))" "$desc" >"$lock_dir/owner.agent" && mv -f "$lock_dir/owner.agent" "$lock_dir/owner"
}
# In the background while switch-to-configuration runs (it may take minutes).
( while sleep 15; do [ -f "$dir/outcome" ] && exit 0; renew; done ) &
renew

say() { echo "[nix-deploy-action agent $(date +%H:%M:%S)] $*"; }
finish() { echo "$1" >"$dir/outcome.tmp" && mv -f "$dir/outcome.tmp" "$dir/outcome"; say "outcome: $1"; exit 0; }
gen_of() { readlink "$1" 2>/dev/null | sed -n 's/^system-\([0-9][0-9]*\)-link$/\1/p'; }

sets_profile=0 changes_running=0
case "$action" in
  switch) sets_profile=1 changes_running=1 ;;
  boot) sets_profile=1 ;;
  test) changes_running=1 ;;
esac
created_gen=

# Puts the target back as it was: the profile link exactly as before (not "profile - 1"), the
# generation this deploy made deleted, the previously running system re-activated (as "test" when it
# was itself a test deploy, so it does not become the boot default), and the boot entry restored.
rollback() {
  ok=0
  if [ "$sets_profile" = 1 ] && [ -n "$created_gen" ]; then
    if [ -n "$prev_gen" ] && [ "$prev_gen" != "$created_gen" ]; then
      nix-env -p "$P" --switch-generation "$prev_gen" && nix-env -p "$P" --delete-generations "$created_gen" || ok=1
    elif [ -z "$prev_gen" ]; then
      rm -f "$P" "$P-$created_gen-link" || ok=1
    fi
  fi
  if [ "$changes_running" = 1 ] && [ -n "$prev_current" ]; then
    how=test
    if [ "$action" = switch ] && [ "$prev_current" = "$prev_profile" ]; then how=switch; fi
    say "re-activating $prev_current ($how)"
    timeout "$activation_timeout" "$prev_current/bin/switch-to-configuration" "$how" || ok=1
  fi
  if [ "$sets_profile" = 1 ] && [ -n "$prev_profile" ] && ! { [ "$changes_running" = 1 ] && [ "$prev_current" = "$prev_profile" ]; }; then
    say "restoring the boot entry of $prev_profile"
    timeout "$activation_timeout" "$prev_profile/bin/switch-to-configuration" boot || ok=1
  fi
  now_current=$(readlink -f /run/current-system 2>/dev/null)
  now_profile=$(readlink -f "$P" 2>/dev/null)
  if [ "$now_current" != "$prev_current" ] || [ "$now_profile" != "$prev_profile" ]; then
    say "after rollback: running '$now_current' (was '$prev_current'), profile '$now_profile' (was '$prev_profile')"
    ok=1
  fi
  return $ok
}

if [ "$sets_profile" = 1 ]; then
  if ! nix-env -p "$P" --set "$top"; then
    echo 1 >"$dir/status"
    finish profile-failed
  fi
  created_gen=$(gen_of "$P")
  echo "$created_gen" >"$dir/generation"
fi

say "switch-to-configuration $action"
timeout "$activation_timeout" "$top/bin/switch-to-configuration" "$action"
rc=$?
echo "$rc" >"$dir/status.tmp" && mv -f "$dir/status.tmp" "$dir/status"
if [ "$rc" != 0 ]; then
  if [ "$rc" = 124 ]; then say "activation did not finish within $activation_timeout s"; else say "activation failed (exit $rc)"; fi
  if [ "$action" = dry-activate ]; then finish failed; fi
  if rollback; then finish rolled-back; else finish rollback-failed; fi
fi
if [ "$wait_seconds" -le 0 ]; then finish done; fi

say "waiting up to $wait_seconds s for the deploy to be confirmed"
deadline=$(( $(date +%s) + wait_seconds ))
while :; do
  if [ -f "$dir/decision" ]; then
    case "$(cat "$dir/decision")" in
      confirm) finish confirmed ;;
      abort)
        say "the deploy was aborted (a health check failed): rolling back"
        if rollback; then finish rolled-back; else finish rollback-failed; fi ;;
      timeout) ;;
    esac
  fi
  if [ "$(date +%s)" -ge "$deadline" ] && mkdir "$dir/decided" 2>/dev/null; then
    echo timeout >"$dir/decision"
    if [ "$on_timeout" = keep ]; then finish unconfirmed-kept; fi
    say "not confirmed within $wait_seconds s: rolling back"
    if rollback; then finish rolled-back-unconfirmed; else finish rollback-failed; fi
  fi
  renew
  sleep 1
done
`

/**
 * Starts the agent detached: as a transient systemd unit when systemd runs the target (checked by
 * /run/systemd/system, as systemd itself does, not by whether systemd-run exists), else in a new
 * session with setsid + nohup. Either way it survives the SSH session.
 * usage: sh -c START_SCRIPT sh DIR AGENT_ARGS...
 */
export const START_SCRIPT = String.raw`dir=$1; shift
sh_path=$(command -v sh)
if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then
  systemd-run --unit="nix-deploy-action-$(basename "$dir")" --collect --quiet --setenv=PATH="$PATH" \
    "$sh_path" "$dir/agent.sh" "$dir" "$@" && echo started-systemd
else
  nohup setsid "$sh_path" "$dir/agent.sh" "$dir" "$@" </dev/null >/dev/null 2>&1 &
  echo started-setsid
fi`

/**
 * Prints the agent's log from byte OFFSET on stdout, and its state on stderr as key=value lines.
 * usage: sh -c FOLLOW_SCRIPT sh DIR OFFSET
 */
export const FOLLOW_SCRIPT = String.raw`dir=$1 offset=$2
size=$(wc -c <"$dir/log" 2>/dev/null || echo 0)
size=$(echo $size)
if [ "$size" -gt "$offset" ]; then tail -c +"$((offset + 1))" "$dir/log" | head -c "$((size - offset))"; fi
{
  echo "size=$size"
  echo "status=$(cat "$dir/status" 2>/dev/null)"
  echo "generation=$(cat "$dir/generation" 2>/dev/null)"
  echo "outcome=$(cat "$dir/outcome" 2>/dev/null)"
} >&2`

/**
 * Records the action's decision, once: the first of the action and the agent's own timeout to create
 * DIR/decided wins. Prints "won" when this decision is the one that counts.
 * usage: sh -c DECIDE_SCRIPT sh DIR confirm|abort
 */
export const DECIDE_SCRIPT = String.raw`if mkdir "$1/decided" 2>/dev/null; then echo "$2" >"$1/decision.tmp" && mv -f "$1/decision.tmp" "$1/decision" && echo won; else echo "lost:$(cat "$1/decision" 2>/dev/null)"; fi`

/**
 * The deploy lock: a directory created atomically by mkdir, with an owner file (id, lease expiry in
 * epoch seconds, description). An expired lease (a crashed run) is taken over.
 * usage: sh -c LOCK_SCRIPT sh LOCKDIR ID EXPIRY DESCRIPTION  -> "acquired" | "held\n<owner file>"
 */
export const LOCK_SCRIPT = String.raw`lock=$1 id=$2 expiry=$3 desc=$4
mkdir -p "$(dirname "$lock")"
take() { printf '%s\n%s\n%s\n' "$id" "$expiry" "$desc" >"$lock/owner.tmp" && mv -f "$lock/owner.tmp" "$lock/owner"; }
if mkdir "$lock" 2>/dev/null; then take; echo acquired; exit 0; fi
owner_id=$(sed -n 1p "$lock/owner" 2>/dev/null)
if [ "$owner_id" = "$id" ]; then take; echo acquired; exit 0; fi
owner_expiry=$(sed -n 2p "$lock/owner" 2>/dev/null)
now=$(date +%s)
# An owner file that never got written (a run killed between mkdir and write) counts as expired
# once the directory is a minute old.
if [ -z "$owner_expiry" ]; then
  if [ -n "$(find "$lock" -maxdepth 0 -mmin +1 2>/dev/null)" ]; then owner_expiry=0; else owner_expiry=$((now + 60)); fi
fi
if [ "$now" -gt "$owner_expiry" ] && mv "$lock" "$lock.expired.$id" 2>/dev/null; then
  rm -rf "$lock.expired.$id"
  if mkdir "$lock" 2>/dev/null; then take; echo acquired-expired; exit 0; fi
fi
echo held
cat "$lock/owner" 2>/dev/null`

/** usage: sh -c UNLOCK_SCRIPT sh LOCKDIR ID — removes the lock only if this run holds it. */
export const UNLOCK_SCRIPT = String.raw`if [ "$(sed -n 1p "$1/owner" 2>/dev/null)" = "$2" ]; then rm -rf "$1"; fi`
