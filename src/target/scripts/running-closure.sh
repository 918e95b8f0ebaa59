# Lists the running system's closure with NAR sizes: paths, a separator line, sizes (package diff).
# shellcheck shell=sh
set -f
paths=$(nix-store -qR /run/current-system) || exit 1
printf '%s\n' "$paths"
echo '--sizes--'
# shellcheck disable=SC2086 # one store path per word
nix-store -q --size $paths
