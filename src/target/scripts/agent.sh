# The activation agent: written to the target for each deploy (not part of the deployed closure, so
# it works with any NixOS generation as it is) and started detached from the SSH session (see
# start-agent.sh), so a dropped connection or an sshd restart by the new system does not stop it. It
#   1. sets the system profile (switch, boot) and records the new generation,
#   2. runs switch-to-configuration with a time limit,
#   3. if that fails, rolls back by itself;
#   4. otherwise, when asked to wait (magic rollback, health checks), waits for the action's decision
#      ("confirm" or "abort", written over a fresh connection) and rolls back on "abort" or when no
#      decision comes in time (unless told to keep the new system then).
# A switch that waits runs as "test" first, and steps 1 and the boot entry follow the confirmation
# (or the keep): until then the boot loader still boots what ran before, so a power cut, a crash or
# a kernel panic in the window comes back on the old system by itself, with nobody at the target.
# (nixos-rebuild's order, the boot entry first, would boot the unconfirmed system, and one that
# broke SSH would wait for hands.) A failure to make the confirmed system the boot default (a full
# /boot) rolls back too: "boot-entry-failed", the state nixos-rebuild switch leaves on that failure.
# The action follows it through files in DIR: log, generation, status, outcome, and pid (whether
# it still runs: an agent killed without an outcome -- out of memory, by hand -- is seen at once).
# For such an agent, the action starts another with the same options and --rollback-of-generation
# (what the dead one recorded): it only puts the target back as it was (rollback below). The same
# undoes a finished deploy when another machine of the fleet failed (rollback-fleet). Its outcomes (the
# words after `finish`) are AGENT_OUTCOMES in src/target/agent/outcome.ts; a unit test checks they agree.
#
# It holds the deploy lock with the action (sourced lock.sh; no --lock-dir: no lock), renewing the
# lease every 15 s until it reaches a final state, so no other deploy starts while this one may still
# roll back, even if the action is gone. After that the action, which reads the outcome, releases the
# lock; if the action gave up following (DIR/abandoned) or does not come for the outcome within 30 s,
# the agent releases it itself. Whatever it starts runs in the foreground or is waited for: when it
# ends, nothing of it is left running.
#
# usage: agent.sh --dir DIR --toplevel PATH --action switch|boot|test|dry-activate
#          --activation-timeout S [--wait-seconds S] [--on-timeout rollback|keep]
#          [--prev-current PATH] [--prev-profile PATH] [--prev-generation N]
#          [--lock-dir DIR --lock-id ID --lease S]
#          [--rollback-of-generation N|- --rollback-created-new 0|1 --rollback-of-dir DIR]   (see below)
#          [--system-profile PATH] [--current-system PATH]   (the real ones by default; tests use others)
# shellcheck shell=sh disable=SC2034 # lock_id, lease and lock_desc are read by lock_op (lock.sh)
set -u
dir='' top='' action='' activation_timeout='' wait_seconds=0 on_timeout=rollback
prev_current='' prev_profile='' prev_gen='' rollback_only=0 rollback_gen='' rollback_new=0 dead_dir=''
lock_dir='' lock_id='' lease=0
P=/nix/var/nix/profiles/system current_link=/run/current-system
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=$2 ;;
    --toplevel) top=$2 ;;
    --action) action=$2 ;;
    --activation-timeout) activation_timeout=$2 ;;
    --wait-seconds) wait_seconds=$2 ;;
    --on-timeout) on_timeout=$2 ;;
    --prev-current) prev_current=$2 ;;
    --prev-profile) prev_profile=$2 ;;
    --prev-generation) prev_gen=$2 ;;
    --lock-dir) lock_dir=$2 ;;
    --lock-id) lock_id=$2 ;;
    --lease) lease=$2 ;;
    --rollback-of-generation) rollback_only=1 rollback_gen=$2 ;;
    --rollback-created-new) rollback_new=$2 ;;
    --rollback-of-dir) dead_dir=$2 ;;
    --system-profile) P=$2 ;;
    --current-system) current_link=$2 ;;
    *) echo "agent.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
if [ -z "$dir" ] || [ -z "$top" ] || [ -z "$action" ] || [ -z "$activation_timeout" ]; then
  echo "agent.sh: --dir, --toplevel, --action and --activation-timeout are required" >&2
  exit 2
fi
# A renewal keeps the holder's description (lock_op reads lock_desc only to take the lock).
lock_desc=''
exec >>"$dir/log" 2>&1 </dev/null
echo $$ >"$dir/pid"

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
  # Said first: the action, which stops reading the log once it sees the outcome, has the line too.
  say "outcome: $1"
  echo "$1" >"$dir/outcome.tmp" && mv -f "$dir/outcome.tmp" "$dir/outcome"
  wake "$dir/follower" "$dir"
  [ -n "$lock_dir" ] || exit 0
  n=0
  while [ -e "$dir/outcome" ] && [ ! -e "$dir/abandoned" ] && [ $n -lt 30 ]; do sleep 1; n=$((n + 1)); done
  if [ -e "$dir/outcome" ]; then lock_op release >/dev/null; fi
  exit 0
}
# The time since boot, read by the shell itself (the wait below looks often): whole seconds in
# $now_s, hundredths in $now_cs (/proc/uptime has two decimals; "1xx - 100", so that a leading 0
# is not read as octal).
read_uptime() {
  read -r up _ </proc/uptime
  now_s=${up%.*}
  now_cs=$((now_s * 100 + 1${up#*.} - 100))
}
# A waiting loop's lease renewal, every 15 s of its looks (nap_look counts them in $looked).
renew_when_due() {
  if [ "$looked" -ge "$next_renew" ]; then
    renew
    next_renew=$((next_renew + 150))
  fi
}
gen_of() { readlink "$1" 2>/dev/null | sed -n 's/^.*-\([0-9][0-9]*\)-link$/\1/p'; }
generations() {
  for l in "$P"-*-link; do [ -e "$l" ] || [ -L "$l" ] || continue; gen_of_name "$l"; done | tr '\n' ' '
}
gen_of_name() { basename "$1" | sed -n 's/^.*-\([0-9][0-9]*\)-link$/\1/p'; }
# Runs a command with a time limit while renewing the lease every 15 s; its exit status in $rc. The
# command runs in the background only so this shell can renew; it is always waited for. timeout
# runs it in a process group of its own: when the time limit passes (124; 137 if it ignored TERM
# for 10 s), everything left in that group -- children that ignore TERM or outlived their parent --
# is killed, so a timed-out activation cannot change the system after the rollback.
#
# Its end is DIR/running removed, which cannot fail for want of space (the new system may fill
# /run: then DIR/rc stays empty, and a wait for it would renew the lease for ever); its status is
# the background job's too. Without room for DIR/running, it runs in the foreground, unrenewed.
# The command under its time limit, its process group's pid in DIR/tpid.
run_timed() { sh -c 'echo $$ >"$1"; shift; exec timeout -k 10 "$@"' sh "$dir/tpid" "$activation_timeout" "$@"; }
run_renewing() {
  rm -f "$dir/rc" "$dir/tpid"
  if ! : >"$dir/running"; then
    run_timed "$@"
    rc=$?
  else
    # Its end wakes this shell (wake.sh): a fast activation's end is known at once.
    { run_timed "$@"; r=$?
      echo $r >"$dir/rc"; rm -f "$dir/running"; wake "$dir/pid" "$dir/agent.sh"; exit $r; } &
    job=$!
    looked=0 next_renew=150
    # Looked at besides (nap_look: a wake-up lost between the look and the nap).
    while [ -e "$dir/running" ]; do
      nap_look
      renew_when_due
    done
    # Its own wake-up (USR1, trapped) would cut the wait short with 138, not the job's status.
    trap '' USR1
    wait "$job"
    r=$?
    trap 'woken=1' USR1
    rc=$(cat "$dir/rc" 2>/dev/null)
    [ -n "$rc" ] || rc=$r
  fi
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then kill -s KILL -- "-$(cat "$dir/tpid")" 2>/dev/null; fi
}

# nix-env as the running system has it, resolved before the switch: PATH reaches the running
# system's tools (/run/current-system/sw/bin), which the switch replaces (a new system without Nix,
# nix.enable = false, must not leave the rollback without it). Its directory resolved, not the
# file: nix-env is a link to `nix`, which acts by the name it is called by.
nix_env=$(command -v nix-env 2>/dev/null) && nix_env=$(cd "${nix_env%/*}" 2>/dev/null && pwd -P)/nix-env
[ -x "$nix_env" ] || nix_env=nix-env

sets_profile=0 changes_running=0
case "$action" in
  switch) sets_profile=1 changes_running=1 ;;
  boot) sets_profile=1 ;;
  test) changes_running=1 ;;
esac
# defer_boot: the profile and the boot entry wait for the decision (see the top). boot_touched:
# whether this agent may have changed them, so that a rollback restores them (a rollback-only agent
# does not know what the dead one did: it restores them).
defer_boot=0 boot_touched=$sets_profile
if [ "$action" = switch ] && [ "$wait_seconds" -gt 0 ] && [ "$rollback_only" = 0 ]; then defer_boot=1 boot_touched=0; fi
created_gen='' created_new=0

# Puts the target back as it was: the profile link exactly as before (not "profile - 1"; if that
# generation is gone, the profile set to its store path), the generation this deploy made deleted
# (only one it made: nix-env --set reuses the newest generation when that already holds the system),
# the previously running system re-activated (as "test"), and the boot entry restored (that of the
# previous profile, through its switch-to-configuration boot). Each of its switches may take
# ROLLBACK_MIN_SECONDS, or activation-timeout when that is longer: a short limit meant for the new
# system must not cut off the way back to the old one.
ROLLBACK_MIN_SECONDS=120
rollback() {
  ok=0
  [ "$activation_timeout" -ge "$ROLLBACK_MIN_SECONDS" ] || activation_timeout=$ROLLBACK_MIN_SECONDS
  if [ "$sets_profile" = 1 ] && [ -n "$created_gen" ]; then
    if [ -n "$prev_gen" ] && [ "$prev_gen" != "$created_gen" ]; then
      if ! "$nix_env" -p "$P" --switch-generation "$prev_gen"; then
        say "generation $prev_gen is gone: setting the profile to $prev_profile"
        if [ -z "$prev_profile" ] || ! "$nix_env" -p "$P" --set "$prev_profile"; then ok=1; fi
      fi
      if [ "$created_new" = 1 ]; then "$nix_env" -p "$P" --delete-generations "$created_gen" || ok=1; fi
    elif [ -z "$prev_gen" ] && [ "$created_new" = 1 ]; then
      rm -f "$P" "$P-$created_gen-link" || ok=1
    fi
  fi
  # Told "-" (the dead agent made no generation the action saw), yet the profile holds this deploy's
  # system: the dead one set it (a switch confirmed, then killed or cut by a power loss before its
  # generation was read). The profile goes back; that generation stays, as nixos-rebuild's would.
  if [ "$rollback_only" = 1 ] && [ "$sets_profile" = 1 ] && [ -z "$created_gen" ] && [ -n "$prev_profile" ] &&
    [ "$prev_profile" != "$top" ] && [ "$(readlink -e "$P" 2>/dev/null)" = "$top" ]; then
    say "the profile holds $top: setting it back to $prev_profile"
    if [ -z "$prev_gen" ] || ! "$nix_env" -p "$P" --switch-generation "$prev_gen"; then
      "$nix_env" -p "$P" --set "$prev_profile" || ok=1
    fi
  fi
  # The running system first, as "test": never through the boot loader, whose install may fail for
  # the reason the deploy did (a full /boot) and must not keep the old system from running again.
  if [ "$changes_running" = 1 ] && [ -n "$prev_current" ]; then
    say "re-activating $prev_current (test)"
    run_renewing "$prev_current/bin/switch-to-configuration" test
    [ "$rc" = 0 ] || ok=1
  fi
  if [ "$boot_touched" = 1 ] && [ -n "$prev_profile" ]; then
    say "restoring the boot entry of $prev_profile"
    run_renewing "$prev_profile/bin/switch-to-configuration" boot
    [ "$rc" = 0 ] || ok=1
  elif [ "$boot_touched" = 1 ]; then
    # A first deploy (no profile before): nothing of NixOS's to put back, and the boot loader may
    # now default to the failed system.
    say "no system profile before this deploy: the boot entry it may have installed cannot be put back"
    ok=1
  fi
  # -e: a profile that does not exist (a first deploy's, removed) reads as none, as prev_profile does.
  now_current=$(readlink -e "$current_link" 2>/dev/null)
  now_profile=$(readlink -e "$P" 2>/dev/null)
  if [ "$now_current" != "$prev_current" ] || [ "$now_profile" != "$prev_profile" ]; then
    say "after rollback: running '$now_current' (was '$prev_current'), profile '$now_profile' (was '$prev_profile')"
    ok=1
  fi
  return $ok
}

renew
if [ "$rollback_only" = 1 ]; then
  # What the dead agent had done: the generation it made (- if none), and whether it was new.
  if [ "$rollback_gen" != - ]; then created_gen=$rollback_gen created_new=$rollback_new; fi
  # Without --rollback-of-dir: a finished deploy of this run undone (rollback-fleet).
  if [ -n "$dead_dir" ]; then
    say "the previous activation agent ended without an outcome: putting the target back as it was"
  else
    say "undoing this run's deploy: putting the target back as it was before it"
  fi
  # What it was running may outlive it (no systemd to end its unit's processes): its activation's
  # process group (see run_renewing) is ended first, so it cannot change the system afterwards.
  if [ -n "$dead_dir" ] && [ -s "$dead_dir/tpid" ]; then kill -s KILL -- "-$(cat "$dead_dir/tpid")" 2>/dev/null || true; fi
  if rollback; then finish rolled-back; else finish rollback-failed; fi
fi
# The new system's switch-to-configuration ACTION (run_renewing), and in $took how long it took, in
# seconds with two decimals: the bench's activation overhead is the rest of the phase.
switch_timed() {
  read_uptime
  started_cs=$now_cs
  run_renewing "$top/bin/switch-to-configuration" "$1"
  read_uptime
  took=$((now_cs - started_cs))
  took="$((took / 100)).$((took % 100 / 10))$((took % 10))"
}
# The system profile set to the new system, its generation recorded (for the action, and for a
# rollback-only agent should this one die).
set_profile() {
  before=$(generations)
  "$nix_env" -p "$P" --set "$top" || return 1
  created_gen=$(gen_of "$P")
  case " $before " in *" $created_gen "*) ;; *) created_new=1 ;; esac
  echo "$created_new" >"$dir/created-new"
  echo "$created_gen" >"$dir/generation"
}
# A deferred switch, confirmed (or kept): the profile, then the boot entry (NixOS's boot loaders
# list the profile's generations), as switch-to-configuration boot. Ends the agent when it fails.
make_boot_default() {
  [ "$defer_boot" = 1 ] || return 0
  say "making $top the boot default (the system profile, then switch-to-configuration boot)"
  if set_profile; then
    boot_touched=1
    switch_timed boot
    say "switch-to-configuration boot exited $rc after $took s"
    [ "$rc" = 0 ] && return 0
    say "rolling back, so that what runs is what boots"
  else
    say "setting the system profile failed: rolling back, so that what runs is what boots"
  fi
  if rollback; then finish boot-entry-failed; else finish rollback-failed; fi
}

if [ "$sets_profile" = 1 ] && [ "$defer_boot" = 0 ]; then
  if ! set_profile; then
    echo 1 >"$dir/status"
    finish profile-failed
  fi
fi

run_as=$action
if [ "$defer_boot" = 1 ]; then
  run_as='test'
  say "switch-to-configuration test (switch: the profile and the boot entry follow the confirmation)"
else
  say "switch-to-configuration $action"
fi
switch_timed "$run_as"
# The status first: a follow poll woken by the log line below then finds it too.
echo "$rc" >"$dir/status.tmp" && mv -f "$dir/status.tmp" "$dir/status"
wake "$dir/follower" "$dir"
say "switch-to-configuration $run_as exited $rc after $took s"
if [ "$rc" != 0 ]; then
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then say "activation did not finish within $activation_timeout s"; else say "activation failed (exit $rc)"; fi
  if [ "$action" = dry-activate ]; then finish failed; fi
  if rollback; then finish rolled-back; else finish rollback-failed; fi
fi
if [ "$wait_seconds" -le 0 ]; then finish 'done'; fi

say "waiting up to $wait_seconds s for the deploy to be confirmed"
read_uptime
deadline=$((now_s + wait_seconds))
looked=0 next_renew=150
while :; do
  if [ -f "$dir/decision" ]; then
    case "$(cat "$dir/decision")" in
      confirm) make_boot_default; finish confirmed ;;
      abort)
        say "the deploy was aborted (a health check failed): rolling back"
        if rollback; then finish rolled-back; else finish rollback-failed; fi ;;
      timeout) ;;
    esac
  fi
  read_uptime
  # decided: decide.sh's and this loop's one winner; a mkdir that failed without making it (no
  # inode left: decide.sh cannot make it either) does not keep the timeout from ending the wait.
  if [ "$now_s" -ge "$deadline" ] && { mkdir "$dir/decided" 2>/dev/null || [ ! -d "$dir/decided" ]; }; then
    echo timeout >"$dir/decision"
    if [ "$on_timeout" = keep ]; then make_boot_default; finish unconfirmed-kept; fi
    say "not confirmed within $wait_seconds s: rolling back"
    if rollback; then finish rolled-back-unconfirmed; else finish rollback-failed; fi
  fi
  # decide.sh wakes this shell (wake.sh): a confirmation is acted on at once (the action waits for
  # the outcome). Looked at besides (nap_look); the lease is renewed every 15 s.
  renew_when_due
  nap_look
done
