# Prints the agent's log from byte OFFSET on stdout (at most MAX bytes: a long backlog comes in
# several polls), and its state on stderr as key=value lines.
# usage: sh -c FOLLOW sh DIR OFFSET MAX
# shellcheck shell=sh
dir=$1 offset=$2 max=$3
size=$(wc -c <"$dir/log" 2>/dev/null || echo 0)
size=$((size + 0))
n=$((size - offset))
if [ "$n" -gt "$max" ]; then n=$max; fi
if [ "$n" -gt 0 ]; then tail -c +"$((offset + 1))" "$dir/log" | head -c "$n"; fi
# Whether the agent still runs, looked at before its outcome is read: an agent that ended after
# writing its outcome is then never taken for one that died without.
if [ ! -d "$dir" ]; then
  agent=gone
elif [ -s "$dir/pid" ]; then
  pid=$(cat "$dir/pid")
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir/agent.sh"; then agent=alive; else agent=dead; fi
else
  agent=starting
fi
{
  echo "agent=$agent"
  echo "created-new=$(cat "$dir/created-new" 2>/dev/null)"
  echo "size=$size"
  echo "status=$(cat "$dir/status" 2>/dev/null)"
  echo "generation=$(cat "$dir/generation" 2>/dev/null)"
  echo "outcome=$(cat "$dir/outcome" 2>/dev/null)"
} >&2
