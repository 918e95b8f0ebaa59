# Runs a script the target keeps (keep-scripts.sh wrote it; src/target/kept-scripts.ts): the
# command carries the SHA-256 of each of its script's parts instead of their text.
# usage: sh -c KEPT_RUN sh DIR HASHES INPUT_HASHES REFRESH [ARG...]
# HASHES are the files in DIR (each named by the SHA-256 of its text, each ending in one newline)
# that, one after the other, are the script; INPUT_HASHES, when not empty, those that are its
# stdin. A file that is missing, or whose text does not have its name's hash (a bad SD card, a
# write cut short), runs nothing: exit 97 and "nda-script-missing" on stderr, and the action sends
# the scripts again. REFRESH 1 (a deploy that changes the target) marks the files used, so
# keep-scripts.sh's clean-up of what no deploy used for 90 days leaves them.
# shellcheck shell=sh
set -f
dir=$1 parts=$2 input_parts=$3 refresh=$4
shift 4
missing() {
  echo nda-script-missing >&2
  exit 97
}
# Each file of $1 checked against its name (one sha256sum for all), then their text in $text.
load() {
  want=''
  for h in $1; do
    case $h in '' | *[!0-9a-f]*) missing ;; esac
    want="$want$h  $h
"
  done
  [ -n "$want" ] || missing
  # shellcheck disable=SC2086 # hex names, split on purpose
  got=$(cd "$dir" 2>/dev/null && sha256sum $1 2>/dev/null) || missing
  [ "$got
" = "$want" ] || missing
  # shellcheck disable=SC2086
  text=$(cd "$dir" && cat $1) || missing
}
load "$parts"
script=$text
if [ -n "$input_parts" ]; then
  load "$input_parts"
  input=$text
fi
if [ "$refresh" = 1 ]; then
  # shellcheck disable=SC2086
  (cd "$dir" && touch -c $parts $input_parts) 2>/dev/null
fi
if [ -n "$input_parts" ]; then
  printf '%s\n' "$input" | sh -c "$script" sh "$@"
  exit
fi
exec sh -c "$script" sh "$@"
