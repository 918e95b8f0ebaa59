# Writes a deployment key (stdin) as root into DIR/NAME, only if DIR and every directory above it
# are real directories owned by root that no one else can change (exit 10 otherwise): whoever can
# write to DIR could plant a link that redirects the secret or swap the file, and whoever can write
# to a parent could swap DIR itself (or a directory between) after the check. A parent may be
# writable by others when it is sticky (/tmp): then they cannot rename what root owns in it. The
# content goes to a file mktemp creates (O_EXCL, unpredictable name, mode 0600), gets its owner and
# mode, then is renamed over the final name with mv -T (a rename replaces a symlink there, never
# follows it).
# usage: sh -c UPLOAD_KEY sh DIR NAME OWNER GROUP MODE < CONTENT
# shellcheck shell=sh
set -eu
dir=$1 name=$2 owner=$3 group=$4 mode=$5
umask 077
refuse() { echo "$*" >&2; exit 10; }
# A directory no one but root can change: real, root's, not writable by group or others (or, with
# sticky set, $2 = sticky-ok, writable but sticky).
check_dir() {
  if [ -L "$1" ] || [ ! -d "$1" ]; then refuse "$1 is a symlink or not a directory"; fi
  # shellcheck disable=SC2046 # owner and mode, split into two words
  set -- "$1" "$2" $(stat -c '%u %a' "$1")
  [ "$3" = 0 ] || refuse "$1 is owned by uid $3, not root"
  if [ $((0$4 & 022)) != 0 ] && { [ "$2" != sticky-ok ] || [ $((0$4 & 01000)) = 0 ]; }; then
    refuse "$1 is writable by group or others (mode $4)"
  fi
}
# What is missing is made first, then the whole chain is checked: a directory someone else made
# meanwhile (in a parent they can write to) is then found as theirs.
if [ ! -e "$dir" ] && [ ! -L "$dir" ]; then mkdir -p "$dir"; chmod 0750 "$dir"; fi
check_dir "$dir" leaf
parent=${dir%/*}
while [ -n "$parent" ]; do
  check_dir "$parent" sticky-ok
  parent=${parent%/*}
done
check_dir / sticky-ok
tmp=$(mktemp "$dir/.$name.XXXXXXXXXX")
trap 'rm -f "$tmp"' EXIT
cat >"$tmp"
chown "$owner:$group" "$tmp"
chmod "$mode" "$tmp"
mv -T -f "$tmp" "$dir/$name"
trap - EXIT
