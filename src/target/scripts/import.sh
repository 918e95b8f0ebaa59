# Decompresses and imports the stream on stdin, then prints which of the paths given as arguments
# are still invalid (none, unless something went wrong). CODEC picks a fixed decompressor.
# usage: sh -c IMPORT sh CODEC PATH...
# shellcheck shell=sh
codec=$1; shift
case "$codec" in zstd) d='zstd -d -q -c' ;; xz) d='xz -d -q -c' ;; gzip) d='gzip -d -c' ;; none) d='cat' ;; *) exit 2 ;; esac
# shellcheck disable=SC2086 # $d is a fixed command with its options
$d | nix-store --import >/dev/null || exit $?
[ $# -eq 0 ] || exec nix-store --check-validity --print-invalid "$@"
