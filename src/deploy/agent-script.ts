/**
 * Shell scripts run on the target. They are fixed text: every value from the action reaches them as
 * a positional parameter (quoted by shellCommand), never pasted into the script, so no input can
 * change what they do. They avoid bashisms: the target's /bin/sh may be any POSIX shell.
 */
import { LOCK_FUNCTIONS } from './lock'

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
 * It holds the deploy lock with the action (LOCK_DIR, LOCK_ID; '' for none), renewing the lease
 * every 15 s until it reaches a final state, so no other deploy starts while this one may still roll
 * back, even if the action is gone. After that the action, which reads the outcome, releases the
 * lock; if the action gave up following (DIR/abandoned) or does not come for the outcome within
 * 30 s, the agent releases it itself. Whatever it starts runs in the foreground or is waited for:
 * when it ends, nothing of it is left running.
 *
 * usage: agent.sh DIR TOPLEVEL ACTION ACTIVATION_TIMEOUT WAIT_SECONDS ON_TIMEOUT PREV_CURRENT PREV_PROFILE PREV_GENERATION LOCK_DIR LOCK_ID LEASE_SECONDS
 *   ON_TIMEOUT: rollback | keep; PREV_*: the target's state before the deploy ('' when absent).
 */
export const AGENT_SCRIPT = String.raw`#!/bin/sh
set -u
dir=$1 top=$2 action=$3 activation_timeout=$4 wait_seconds=$5 on_timeout=$6
prev_current=$7 prev_profile=$8 prev_gen=$9
shift 9
lock_dir=$1 lock_id=$2 lease=$3 lock_desc=
P=/nix/var/nix/profiles/system
exec >>"$dir/log" 2>&1 </dev/null
${LOCK_FUNCTIONS}

say() { echo "[nix-deploy-action agent $(date +%H:%M:%S)] $*"; }
renew() {
  [ -n "$lock_dir" ] || return 0
  case $(lock_op renew) in
    renewed) ;;
    *) say "warning: this deploy no longer holds the deploy lock" ;;
  esac
}
# Records the final outcome. The action, following, reads it and removes DIR, and then releases the
# lock after its checks; if it does not come for the outcome within 30 s (it is gone, or it wrote
# DIR/abandoned), the agent releases the lock itself.
finish() {
  echo "$1" >"$dir/outcome.tmp" && mv -f "$dir/outcome.tmp" "$dir/outcome"
  say "outcome: $1"
  [ -n "$lock_dir" ] || exit 0
  n=0
  while [ -e "$dir/outcome" ] && [ ! -e "$dir/abandoned" ] && [ $n -lt 30 ]; do sleep 1; n=$((n + 1)); done
  if [ -e "$dir/outcome" ]; then lock_op release >/dev/null; fi
  exit 0
}
gen_of() { readlink "$1" 2>/dev/null | sed -n 's/^system-\([0-9][0-9]*\)-link$/\1/p'; }
generations() { ls /nix/var/nix/profiles 2>/dev/null | sed -n 's/^system-\([0-9][0-9]*\)-link$/\1/p' | tr '\n' ' '; }
# Runs a command with a time limit while renewing the lease every 15 s; its exit status in $rc. The
# command runs in the background only so this shell can renew; it is always waited for. timeout
# runs it in a process group of its own: when the time limit passes (124; 137 if it ignored TERM
# for 10 s), everything left in that group -- children that ignore TERM or outlived their parent --
# is killed, so a timed-out activation cannot change the system after the rollback.
run_renewing() {
  rm -f "$dir/rc" "$dir/tpid"
  { sh -c 'echo $$ >"$1"; shift; exec timeout -k 10 "$@"' sh "$dir/tpid" "$activation_timeout" "$@"; echo $? >"$dir/rc"; } &
  job=$!
  ticks=0
  while [ ! -s "$dir/rc" ]; do
    sleep 1
    ticks=$((ticks + 1))
    if [ $((ticks % 15)) = 0 ]; then renew; fi
  done
  wait "$job"
  rc=$(cat "$dir/rc")
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then kill -s KILL -- "-$(cat "$dir/tpid")" 2>/dev/null; fi
}

sets_profile=0 changes_running=0
case "$action" in
  switch) sets_profile=1 changes_running=1 ;;
  boot) sets_profile=1 ;;
  test) changes_running=1 ;;
esac
created_gen= created_new=0

# Puts the target back as it was: the profile link exactly as before (not "profile - 1"), the
# generation this deploy made deleted (only one it made: nix-env --set reuses the newest generation
# when that already holds the system), the previously running system re-activated (as "test" when it
# was itself a test deploy, so it does not become the boot default), and the boot entry restored.
rollback() {
  ok=0
  if [ "$sets_profile" = 1 ] && [ -n "$created_gen" ]; then
    if [ -n "$prev_gen" ] && [ "$prev_gen" != "$created_gen" ]; then
      if ! nix-env -p "$P" --switch-generation "$prev_gen"; then
        say "generation $prev_gen is gone: setting the profile to $prev_profile"
        [ -n "$prev_profile" ] && nix-env -p "$P" --set "$prev_profile" || ok=1
      fi
      if [ "$created_new" = 1 ]; then nix-env -p "$P" --delete-generations "$created_gen" || ok=1; fi
    elif [ -z "$prev_gen" ] && [ "$created_new" = 1 ]; then
      rm -f "$P" "$P-$created_gen-link" || ok=1
    fi
  fi
  if [ "$changes_running" = 1 ] && [ -n "$prev_current" ]; then
    how=test
    if [ "$action" = switch ] && [ "$prev_current" = "$prev_profile" ]; then how=switch; fi
    say "re-activating $prev_current ($how)"
    run_renewing "$prev_current/bin/switch-to-configuration" "$how"
    [ "$rc" = 0 ] || ok=1
  fi
  if [ "$sets_profile" = 1 ] && [ -n "$prev_profile" ] && ! { [ "$changes_running" = 1 ] && [ "$prev_current" = "$prev_profile" ]; }; then
    say "restoring the boot entry of $prev_profile"
    run_renewing "$prev_profile/bin/switch-to-configuration" boot
    [ "$rc" = 0 ] || ok=1
  fi
  now_current=$(readlink -f /run/current-system 2>/dev/null)
  now_profile=$(readlink -f "$P" 2>/dev/null)
  if [ "$now_current" != "$prev_current" ] || [ "$now_profile" != "$prev_profile" ]; then
    say "after rollback: running '$now_current' (was '$prev_current'), profile '$now_profile' (was '$prev_profile')"
    ok=1
  fi
  return $ok
}

renew
if [ "$sets_profile" = 1 ]; then
  before=$(generations)
  if ! nix-env -p "$P" --set "$top"; then
    echo 1 >"$dir/status"
    finish profile-failed
  fi
  created_gen=$(gen_of "$P")
  case " $before " in *" $created_gen "*) ;; *) created_new=1 ;; esac
  echo "$created_gen" >"$dir/generation"
fi

say "switch-to-configuration $action"
run_renewing "$top/bin/switch-to-configuration" "$action"
echo "$rc" >"$dir/status.tmp" && mv -f "$dir/status.tmp" "$dir/status"
if [ "$rc" != 0 ]; then
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then say "activation did not finish within $activation_timeout s"; else say "activation failed (exit $rc)"; fi
  if [ "$action" = dry-activate ]; then finish failed; fi
  if rollback; then finish rolled-back; else finish rollback-failed; fi
fi
if [ "$wait_seconds" -le 0 ]; then finish done; fi

say "waiting up to $wait_seconds s for the deploy to be confirmed"
deadline=$(( $(cut -d. -f1 /proc/uptime) + wait_seconds ))
ticks=0
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
  if [ "$(cut -d. -f1 /proc/uptime)" -ge "$deadline" ] && mkdir "$dir/decided" 2>/dev/null; then
    echo timeout >"$dir/decision"
    if [ "$on_timeout" = keep ]; then finish unconfirmed-kept; fi
    say "not confirmed within $wait_seconds s: rolling back"
    if rollback; then finish rolled-back-unconfirmed; else finish rollback-failed; fi
  fi
  ticks=$((ticks + 1))
  if [ $((ticks % 15)) = 0 ]; then renew; fi
  sleep 1
done
`

/**
 * Starts the agent detached: as a transient systemd unit when systemd runs the target (checked by
 * /run/systemd/system, as systemd itself does, not by whether systemd-run exists), else in a new
 * session with setsid + nohup. Either way it survives the SSH session. First it renews the deploy
 * lock: a run whose lock was taken over (its lease ran out) starts nothing ("lost-lock").
 * usage: sh -c START_SCRIPT sh LOCK_DIR LOCK_ID LEASE DIR AGENT_ARGS...   (AGENT_ARGS: agent.sh's after DIR)
 */
export const START_SCRIPT = String.raw`lock_dir=$1 lock_id=$2 lease=$3 lock_desc= dir=$4
shift 4
${LOCK_FUNCTIONS}
if [ -n "$lock_dir" ] && [ "$(lock_op renew)" != renewed ]; then echo lost-lock; exit 0; fi
sh_path=$(command -v sh)
if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then
  systemd-run --unit="nix-deploy-action-$(basename "$dir")" --collect --quiet --setenv=PATH="$PATH" \
    "$sh_path" "$dir/agent.sh" "$dir" "$@" && echo started-systemd
else
  nohup setsid "$sh_path" "$dir/agent.sh" "$dir" "$@" </dev/null >/dev/null 2>&1 &
  echo started-setsid
fi`

/**
 * Prints the agent's log from byte OFFSET on stdout (at most MAX bytes: a long backlog comes in
 * several polls), and its state on stderr as key=value lines.
 * usage: sh -c FOLLOW_SCRIPT sh DIR OFFSET MAX
 */
export const FOLLOW_SCRIPT = String.raw`dir=$1 offset=$2 max=$3
size=$(wc -c <"$dir/log" 2>/dev/null || echo 0)
size=$(echo $size)
n=$((size - offset))
if [ "$n" -gt "$max" ]; then n=$max; fi
if [ "$n" -gt 0 ]; then tail -c +"$((offset + 1))" "$dir/log" | head -c "$n"; fi
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
