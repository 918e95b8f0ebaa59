# substitute-on-destination: the target fetches the paths (on stdin) it can from its own
# substituters (e.g. cache.nixos.org for everything from nixpkgs), before anything crosses the
# tunnel; then prints which are still missing. Bounded for a target without internet: one download
# attempt, a short connect timeout, half a minute without a byte (a cache that hangs, a link that
# drops what it carries) ends a download, no fallback to building. A failure to substitute is not an error
# (--keep-going; the rest is copied). With a binary cache's URI and public key as arguments (a
# deploy plan's: the paths were published there, signed), from that cache too. With the URI alone
# (a deploy user's gate: a substituter named by a user the daemon does not trust is ignored), the
# paths are copied from the cache by this client instead, and the daemon takes only those signed by
# a key it trusts.
# usage: sh -c SUBSTITUTE sh [URI [PUBLIC-KEY]] < PATHS
# shellcheck shell=sh
set -f
paths=$(cat)
if [ $# = 1 ]; then
  # What went wrong, if anything, in its last lines (an unreachable cache, a signature refused).
  if ! err=$(printf '%s
' "$paths" | xargs nix --extra-experimental-features nix-command copy --from "$1" --option download-attempts 1 --option connect-timeout 5 --option stalled-download-timeout 30 2>&1 >/dev/null); then
    printf '%s
' "$err" | tail -n 5 >&2
  fi
else
  if [ $# = 2 ]; then
    set -- --option extra-substituters "$1" --option extra-trusted-public-keys "$2"
  fi
  printf '%s
' "$paths" | xargs nix-store --realise --keep-going --option download-attempts 1 --option connect-timeout 5 --option stalled-download-timeout 30 --option fallback false "$@" >/dev/null 2>&1
fi
printf '%s
' "$paths" | xargs nix-store --check-validity --print-invalid
