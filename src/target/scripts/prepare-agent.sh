# Writes the agent (stdin) to DIR/agent.sh, private to root, with an empty log beside it. Run again
# (a retry after a lost connection), it replaces agent.sh by a rename, so a shell already reading
# the old one reads it to its end, and keeps the log.
# usage (a deploy user's gate, nixos/deploy-user/root.sh; a login that takes commands has
# place-agent.sh do this in the start's command): sh prepare-agent.sh DIR < agent.sh
# shellcheck shell=sh
umask 077 && mkdir -p "$1" && cat >"$1/agent.sh.new" && mv -f "$1/agent.sh.new" "$1/agent.sh" &&
  { [ -e "$1/log" ] || : >"$1/log"; }
