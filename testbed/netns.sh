# shellcheck shell=bash
# Sourced by pi.sh and fleet.sh.
# usage: end_netns_processes NS
# Everything whose network namespace is a simulated Pi's is that Pi's: its sshd, its sessions, the
# activation agents they started. Ends exactly those, by pid (`ip netns pids`): TERM, three times
# while any are left, then KILL. Matching a name or pattern would hit processes of the whole
# machine: network namespaces do not isolate process ids.
end_netns_processes() {
  local p
  for _ in 1 2 3; do
    p=$(ip netns pids "$1" 2>/dev/null | tr '\n' ' ')
    [ -n "$p" ] || break
    # shellcheck disable=SC2086
    kill $p 2>/dev/null || true
    sleep 0.2
  done
  p=$(ip netns pids "$1" 2>/dev/null | tr '\n' ' ')
  # shellcheck disable=SC2086
  [ -z "$p" ] || kill -9 $p 2>/dev/null || true
}
