# Prints which of the store paths on stdin the target's store lacks.
# shellcheck shell=sh
set -f
# shellcheck disable=SC2046 # one store path per word
exec nix-store --check-validity --print-invalid $(cat)
