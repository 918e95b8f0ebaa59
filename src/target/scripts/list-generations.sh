# Lists the system generations ("system-N-link PATH"), then what runs and what boots.
# shellcheck shell=sh
for l in /nix/var/nix/profiles/system-*-link; do [ -e "$l" ] && printf '%s %s\n' "$(basename "$l")" "$(readlink -f "$l")"; done
printf 'running %s\n' "$(readlink -f /run/current-system 2>/dev/null)"
printf 'booted %s\n' "$(readlink -f /run/booted-system 2>/dev/null)"
