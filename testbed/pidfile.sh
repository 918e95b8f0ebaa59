# shellcheck shell=bash
# Pid files outlive their processes, and the machine soon gives an ended process's pid to another
# (within minutes on a busy machine: a systemd Pi's supervisor's pid was found on pi's sshd). A
# pid file names this testbed's process only while that process started before the file was
# written: sshd and QEMU write theirs once running, the scripts write $! after the start; a process
# that got the pid later started after it. Both times are wall-clock ones (the start time through
# /proc/stat's btime): a clock stepped forward meanwhile would make a running process look ended
# (nothing on the testbed steps it). Sourced by the testbed's scripts.

# pid_of FILE: the pid FILE names, while that process is the one it was written for; fails otherwise.
pid_of() {
  local file=$1 pid stat btime hz
  pid=$(cat "$file" 2>/dev/null) || return 1
  case $pid in '' | *[!0-9]*) return 1 ;; esac
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  # The fields after "PID (COMM) ": the start time (field 22, in clock ticks since the boot) is the 20th.
  stat=${stat##*) }
  # shellcheck disable=SC2086 # split into the fields, on purpose
  set -- $stat
  btime=$(awk '$1 == "btime" { print $2 }' /proc/stat)
  hz=$(getconf CLK_TCK)
  # Whole seconds on both sides (btime's and the file's), hence a second of slack.
  [ $((btime + ${20} / hz)) -le $(($(stat -c %Y "$file") + 1)) ] || return 1
  echo "$pid"
}

# alive FILE: the process FILE names runs (see pid_of).
alive() { pid_of "$1" >/dev/null; }
