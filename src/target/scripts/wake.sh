# Waking a script that waits for news at once, instead of at its next look (nap_look, below):
# agent.sh waits for its activation's end and for the decision, follow.sh for the exit status
# and the outcome. Sourced by both sides. The sleeper naps (a sleep it waits for, which a USR1
# cuts short: trapped here); the waker signals the pid a file names only if that process's
# arguments include the expected one exactly, so a stale pid, since reused by another process,
# is never signalled (USR1's default action would end it).
#   nap SECONDS              sleeps up to SECONDS, less when woken
#   nap_look [LIMIT]         a waiting loop's nap until its next look (below)
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
# A waiting loop looks for itself besides being woken, for a wake-up lost between its look and its
# nap (a signal that arrives just before the nap's wait). Each look costs the target a process
# start or two (the nap's sleep, a wc): a tenth of a second apart for the first half second, then
# half a second apart, so that a long activation does not cost a Pi twenty a second. The caller
# sets looked=0 first and naps only while looked < LIMIT; each nap adds the tenths it napped to
# it, the last one ending at LIMIT.
nap_look() {
  look_step=1
  [ "$looked" -lt 5 ] || look_step=5
  if [ -n "${1:-}" ] && [ $(($1 - looked)) -lt "$look_step" ]; then look_step=$(($1 - looked)); fi
  nap "0.$look_step"
  looked=$((looked + look_step))
}
wake() {
  wake_pid=''
  { read -r wake_pid; } 2>/dev/null <"$1"
  case $wake_pid in '' | *[!0-9]*) return 0 ;; esac
  # (The braces: a redirection that fails -- the process is gone -- is silenced too.)
  if { tr '\0' '\n' <"/proc/$wake_pid/cmdline"; } 2>/dev/null | grep -qxF -- "$2"; then
    kill -s USR1 "$wake_pid" 2>/dev/null
  fi
  return 0
}
