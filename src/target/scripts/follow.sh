# Prints the agent's log from byte OFFSET on stdout (at most MAX bytes: a long backlog comes in
# several polls), and its state on stderr as key=value lines. With WAIT (tenths of a second), it
# first waits up to that long for news -- the log grown past OFFSET, the exit status (unless the
# action already has it: KNOWS_STATUS 1), the outcome, or the directory gone -- looking a tenth
# of a second apart, half a second apart after the first half second (nap_look, wake.sh), and woken
# at once by the agent when it writes the status or the outcome (wake.sh: it finds this shell's pid
# in DIR/follower): the action learns of the log within a tenth of a second (half a second once a
# wait grew long) and of the rest at once, on one command per change. News that is the log alone
# is held a second more (cut short by the status or the outcome; never past WAIT), so that the
# lines an activation prints a moment apart come in one poll, not one each: every poll is a
# command (a round trip through the jump host, about a kilobyte of SSH, processes on the Pi).
# usage: sh -c FOLLOW sh DIR OFFSET MAX [WAIT KNOWS_STATUS]
# shellcheck shell=sh
dir=$1 offset=$2 max=$3 wait=${4:-0} knows_status=${5:-0}
# Registered before the first look: news written after it wakes this shell, news before it is seen.
if [ "$wait" -gt 0 ]; then { echo $$ >"$dir/follower"; } 2>/dev/null; fi
looked=0 size=0
while [ "$looked" -lt "$wait" ] && [ -d "$dir" ] && [ ! -e "$dir/outcome" ]; do
  if [ "$knows_status" != 1 ] && [ -e "$dir/status" ]; then break; fi
  size=$(wc -c <"$dir/log" 2>/dev/null || echo 0)
  if [ $((size + 0)) -gt "$offset" ]; then break; fi
  nap_look "$wait"
done
# The hold: within the wait the action asked for (it counts on the answer by then), not for a
# backlog that fills a poll already, in half-second naps (the status and the outcome wake it).
# Only after log news (else the loop below ends at once, or nothing is left of the wait): the size
# is the one the loop above just read.
held=$((wait - looked))
[ "$held" -le 10 ] || held=10
[ $((size - offset)) -lt "$max" ] || held=0
while [ "$held" -gt 0 ] && [ -d "$dir" ] && [ ! -e "$dir/outcome" ]; do
  if [ "$knows_status" != 1 ] && [ -e "$dir/status" ]; then break; fi
  step=5
  [ "$held" -ge 5 ] || step=$held
  nap "0.$step"
  held=$((held - step))
done
# Whether the agent still runs, looked at before its outcome is read: an agent that ended after
# writing its outcome is then never taken for one that died without. The outcome is read before
# the log's size: the agent logs its outcome, then writes it, so the log read has that line.
if [ ! -d "$dir" ]; then
  agent=gone
elif [ -s "$dir/pid" ]; then
  pid=''
  { read -r pid; } 2>/dev/null <"$dir/pid"
  if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$dir/agent.sh"; then agent=alive; else agent=dead; fi
else
  agent=starting
fi
# A state file's one line, read by the shell itself (a poll runs this many times per deploy, on a
# Pi where every process start costs); empty when the file is not there (yet, or any more).
line() {
  v=''
  if [ -f "$1" ]; then { IFS= read -r v; } 2>/dev/null <"$1"; fi
  echo "$2=$v"
}
outcome=''
if [ -f "$dir/outcome" ]; then { IFS= read -r outcome; } 2>/dev/null <"$dir/outcome"; fi
size=$(wc -c <"$dir/log" 2>/dev/null || echo 0)
size=$((size + 0))
n=$((size - offset))
if [ "$n" -gt "$max" ]; then n=$max; fi
if [ "$n" -gt 0 ]; then tail -c +"$((offset + 1))" "$dir/log" | head -c "$n"; fi
{
  echo "agent=$agent"
  line "$dir/created-new" created-new
  echo "size=$size"
  line "$dir/status" status
  line "$dir/generation" generation
  echo "outcome=$outcome"
} >&2
