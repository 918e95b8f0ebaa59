# Waking a script that waits for news at once, instead of at its next look a tenth of a second
# later: agent.sh waits for its activation's end and for the decision, follow.sh for the exit status
# and the outcome. Sourced by both sides. The sleeper naps (a sleep it waits for, which a USR1
# cuts short: trapped here); the waker signals the pid a file names only if that process's
# arguments include the expected one exactly, so a stale pid, since reused by another process,
# is never signalled (USR1's default action would end it).
#   nap SECONDS              sleeps up to SECONDS, less when woken
#   wake PIDFILE ARGUMENT    wakes the process in PIDFILE if ARGUMENT is one of its arguments
# shellcheck shell=sh
woken=0
trap 'woken=1' USR1
nap() {
  # Woken since the last nap (while the caller looked): it looks again at once.
  if [ "$woken" = 1 ]; then
    woken=0
    return 0
  fi
  sleep "$1" >/dev/null 2>&1 &
  nap_pid=$!
  wait "$nap_pid"
  nap_status=$?
  if [ "$woken" = 1 ] && [ "$nap_status" -gt 128 ]; then
    woken=0
    # Cut short: the sleep is still this shell's unreaped child, so the pid is still its own.
    kill "$nap_pid" 2>/dev/null
  fi
  return 0
}
wake() {
  wake_pid=$(cat "$1" 2>/dev/null) || return 0
  case $wake_pid in '' | *[!0-9]*) return 0 ;; esac
  # (The braces: a redirection that fails -- the process is gone -- is silenced too.)
  if { tr '\0' '\n' <"/proc/$wake_pid/cmdline"; } 2>/dev/null | grep -qxF -- "$2"; then
    kill -s USR1 "$wake_pid" 2>/dev/null
  fi
  return 0
}
