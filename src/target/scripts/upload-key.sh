# Writes a deployment key (stdin) as root into DIR/NAME, only if DIR is a real directory owned by
# root and not writable by group or others (exit 10 otherwise: anyone who can write there could
# plant a link that redirects the secret, or swap the file). The content goes to a file mktemp
# creates (O_EXCL, unpredictable name, mode 0600), gets its owner and mode, then is renamed over the
# final name with mv -T (a rename replaces a symlink there, never follows it).
# usage: sh -c UPLOAD_KEY sh DIR NAME OWNER GROUP MODE < CONTENT
# shellcheck shell=sh
set -eu
dir=$1 name=$2 owner=$3 group=$4 mode=$5
umask 077
if [ ! -e "$dir" ] && [ ! -L "$dir" ]; then mkdir -p "$dir"; chmod 0750 "$dir"; fi
if [ -L "$dir" ] || [ ! -d "$dir" ]; then echo "$dir is a symlink or not a directory" >&2; exit 10; fi
dir_uid=$(stat -c %u "$dir") dir_mode=$(stat -c %a "$dir")
if [ "$dir_uid" != 0 ]; then echo "$dir is owned by uid $dir_uid, not root" >&2; exit 10; fi
if [ $((0$dir_mode & 022)) != 0 ]; then echo "$dir is writable by group or others (mode $dir_mode)" >&2; exit 10; fi
tmp=$(mktemp "$dir/.$name.XXXXXXXXXX")
trap 'rm -f "$tmp"' EXIT
cat >"$tmp"
chown "$owner:$group" "$tmp"
chmod "$mode" "$tmp"
mv -T -f "$tmp" "$dir/$name"
trap - EXIT
