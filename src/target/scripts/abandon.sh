# The action stops following the agent in DIR: the agent then releases the deploy lock itself when
# it reaches its final state. Prints "finished" when it already has (the action may release it).
# usage: sh -c ABANDON sh DIR
# shellcheck shell=sh
: >"$1/abandoned" && if [ -f "$1/outcome" ]; then echo finished; fi
