# Writes the agent (stdin) to DIR/agent.sh, private to root, with an empty log beside it.
# usage: sh -c PREPARE_AGENT sh DIR < agent.sh
# shellcheck shell=sh
umask 077 && mkdir -p "$1" && cat >"$1/agent.sh" && : >"$1/log"
