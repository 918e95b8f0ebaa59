# Keeps scripts on the target for kept-run.sh: each in DIR under the SHA-256 of its text, written
# whole (a rename) and checked, private to root. Files no run used for 90 days go first. Prints
# "kept" when every one was written.
# usage: sh -c KEEP_SCRIPTS sh DIR HASH TEXT [HASH TEXT...]
# shellcheck shell=sh
set -f
dir=$1
shift
# The parent as every other script makes it; the scripts' own directory root's alone.
mkdir -p "${dir%/*}" || exit 1
umask 077
mkdir -p "$dir" || exit 1
# Root's alone, even if it was made otherwise; never through a link.
[ ! -L "$dir" ] && chmod 700 "$dir" || exit 1
find "$dir" -type f -mtime +90 -exec rm -f {} \; 2>/dev/null
while [ $# -ge 2 ]; do
  case $1 in '' | *[!0-9a-f]*) exit 2 ;; esac
  new=$dir/.new-$$-$1
  if ! { printf '%s' "$2" >"$new" && [ "$(sha256sum <"$new")" = "$1  -" ] && mv -f "$new" "$dir/$1"; }; then
    rm -f "$new"
    exit 1
  fi
  shift 2
done
echo kept
