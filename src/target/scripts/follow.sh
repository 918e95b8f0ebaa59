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
{
  echo "size=$size"
  echo "status=$(cat "$dir/status" 2>/dev/null)"
  echo "generation=$(cat "$dir/generation" 2>/dev/null)"
  echo "outcome=$(cat "$dir/outcome" 2>/dev/null)"
} >&2
