# Records the action's decision, once: the first of the action and the agent's own timeout to create
# DIR/decided wins. Prints one line: "won" when this decision is the one that counts, else
# "lost:<decision>" ("failed": it could not be written, and the claim is given up, so that the
# agent's own timeout still decides).
# With OFFSET MAX WAIT, it then answers as a follow poll (follow.sh, composed after it) with the
# exit status known: what the decision brought (the outcome, the log's last lines) comes back in
# the same command, not in one more.
# usage: sh -c DECIDE sh DIR confirm|abort [OFFSET MAX WAIT]
# shellcheck shell=sh
if mkdir "$1/decided" 2>/dev/null; then
  if echo "$2" >"$1/decision.tmp" && mv -f "$1/decision.tmp" "$1/decision"; then
    echo won
  else
    rm -f "$1/decision.tmp"
    rmdir "$1/decided" 2>/dev/null
    echo failed
  fi
  # The agent acts on it now, not at its next look.
  wake "$1/pid" "$1/agent.sh"
else
  echo "lost:$(cat "$1/decision" 2>/dev/null)"
fi
[ $# = 5 ] || exit 0
set -- "$1" "$3" "$4" "$5" 1
