# Runs a script the target keeps (keep-scripts.sh wrote it; src/target/kept-scripts.ts): the
# command carries the SHA-256 of each of its script's parts instead of their text.
# usage: sh -c KEPT_RUN sh DIR HASHES INPUT_HASHES [ARG...]
# HASHES are the files in DIR (each named by the SHA-256 of its text) that, joined by newlines,
# are the script; INPUT_HASHES, when not empty, those that are its stdin. A file that is missing,
# or whose text does not have its name's hash (a bad SD card, a write cut short), runs nothing:
# exit 97 and "nda-script-missing" on stderr, and the action sends the scripts again.
# shellcheck shell=sh
set -f
dir=$1 parts=$2 input_parts=$3
shift 3
missing() {
  echo nda-script-missing >&2
  exit 97
}
used=''
# The text of the kept files $1 names, joined by newlines, in $text; each one checked first.
load() {
  text=''
  for h in $1; do
    case $h in '' | *[!0-9a-f]*) missing ;; esac
    [ "$({ sha256sum <"$dir/$h"; } 2>/dev/null)" = "$h  -" ] || missing
    text="$text$(cat "$dir/$h")
" || missing
    used="$used $dir/$h"
  done
  [ -n "$text" ] || missing
}
load "$parts"
script=$text
if [ -n "$input_parts" ]; then
  load "$input_parts"
  input=$text
fi
# What was run lately is kept: keep-scripts.sh removes only what no run used for 90 days.
# shellcheck disable=SC2086 # paths of hex names, split on purpose
touch -c $used 2>/dev/null
if [ -n "$input_parts" ]; then
  printf '%s' "$input" | sh -c "$script" sh "$@"
  exit
fi
exec sh -c "$script" sh "$@"
