# The target's state alone (after the activation, for verify). usage: sh -c PROBE sh
# shellcheck shell=sh
probe_state
