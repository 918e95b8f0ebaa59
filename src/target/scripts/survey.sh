# Everything the deploy must know from the target before copying, as one SSH command (every command
# costs a session, a shell start and a round trip through the jump host; the answers are small):
#   --lock--   first, the deploy lock (lock.sh): "acquired" (also when it was held for a boot trial
#              of TOPLEVEL, booted and pending: taken over), or "held" and its holder, and then
#              nothing else: the state must be read under the lock, or a run that waited would
#              decide (and roll back to) what another run has since replaced.
#   --state--  what it runs and has (probe.sh)
#   --unchanged-- when the target already has TOPLEVEL as the mode asks (UNCHANGED_WHEN: switch,
#              boot, test, or never); with RELEASE=yes the lock is released in the same command
#              ("released"): a no-op deploy costs one round trip. Nothing follows.
#   --copy--   "codec NAME" for each decompressor it has, "missing PATH" for each path of the new
#              closure (given on stdin) its store lacks; before asking, the new system is pinned
#              with a GC root (a symlink may point at a path that does not exist yet), so a
#              garbage collection on the target between import and profile switch cannot delete
#              what is copied; other runs' roots older than GC_ROOT_MAX_AGE minutes are removed.
#   --running-- the running system's closure as it differs from the new one, for the package diff
#              (src/target/survey.ts puts it back together from the new closure): "count N" paths,
#              "new PATH" for each path of the new closure it lacks that the store has (those it
#              lacks are the missing ones above), "only PATH SIZE" for each of its own the new one
#              lacks. Only the difference crosses the link, not a closure of a thousand paths.
#              Nothing (no diff) when it cannot be listed.
# With CACHE (a deploy plan's binary cache, which the target fetches the system from next), the new
# closure is not sent but named: the target lists it itself (from its store when it has the system,
# else from the cache's .narinfo files), sorted, and answers "closure COUNT SHA256" of that listing
# (the runner checks it listed the same) and, instead of paths of it, their places in that order
# ("missing-at" and "new-at", each FIRST or FIRST-LAST, 0 the first): a thousand store paths cross
# neither way, each place once and in order. "closure unknown" when it cannot list it (nix's last
# word on stderr): the runner asks again with the paths; "closure unknown unanswered" when the cache
# did not answer it (no connection, or 10 s without a byte; not an HTTP error): the runner then does
# not ask it to fetch from that cache. CACHE "-": the listing is on stdin (a deploy user's gate made
# it, as its user); "unanswered": the gate could not list it, the cache did not answer it.
# Exit 3: no GC root; 4: the store query failed; 5: the lock could not be read or written.
# usage: sh -c SURVEY sh GC_ROOT_LINK TOPLEVEL UNCHANGED_WHEN RELEASE GC_ROOT_MAX_AGE LOCK_DIR LOCK_ID LEASE DESCRIPTION [CACHE] < PATHS
#   (LOCK_DIR '' for no lock; no PATHS with a cache's URI; with "-", the gate's listing)
# shellcheck shell=sh disable=SC2034 # lease, lock_desc and lock_trial_system are read by lock_op (lock.sh)
set -f
gcroot=$1 top=$2 unchanged_when=$3 release=$4 max_age=$5 lock_dir=$6 lock_id=$7 lease=$8 lock_desc=$9 cache=${10:-}
echo '--lock--'
if [ -n "$lock_dir" ]; then
  # A boot trial of this very system, pending and booted, is this run's to settle (lock.sh).
  lock_trial_system=$top
  answer=$(lock_op acquire) || exit 5
  printf '%s\n' "$answer"
  [ "$answer" = acquired ] || exit 0
fi
echo '--state--'
probe_state
cur=$(readlink -e /run/current-system 2>/dev/null) prof=$(readlink -e /nix/var/nix/profiles/system 2>/dev/null) unchanged=0
case $unchanged_when in
  switch) [ "$cur" = "$top" ] && [ "$prof" = "$top" ] && unchanged=1 ;;
  boot) [ "$prof" = "$top" ] && unchanged=1 ;;
  test) [ "$cur" = "$top" ] && unchanged=1 ;;
esac
if [ "$unchanged" = 1 ]; then
  echo '--unchanged--'
  # Not while a boot trial is pending: the run settles it under the lock.
  if [ -n "$lock_dir" ] && [ "$release" = yes ] && [ ! -f "${lock_dir%/*}/boot-trial" ] &&
    [ ! -f "${lock_dir%/*}/boot-trial.reached" ]; then lock_op release; fi
  exit 0
fi
echo '--copy--'
gcdir=$(dirname "$gcroot")
mkdir -p "$gcdir" && ln -sfn "$top" "$gcroot" || exit 3
find "$gcdir" -maxdepth 1 -type l -mmin +"$max_age" -exec rm -f {} + 2>/dev/null
for c in zstd xz gzip; do command -v "$c" >/dev/null 2>&1 && echo "codec $c"; done
# Paths ($2, one per line) of the sorted closure as "$1-at" lines of their places in it (see above).
places() {
  [ -n "$2" ] || return 0
  { printf '%s\n' "$new"; echo --; printf '%s\n' "$2"; } | awk -v tag="$1-at" '
    $0 == "--" { part = 1; next }
    !part { at[$0] = n++; next }
    $0 in at { hit[at[$0]] = 1 }
    END {
      for (i = 0; i <= n; i++) {
        if (i in hit) { if (first == "") first = i; last = i; continue }
        if (first != "") { print tag " " (first == last ? first : first "-" last); first = "" }
      }
    }'
}
if [ -z "$cache" ]; then
  new=$(cat)
else
  # Bounded, under the lock: a cache that is down or stalls costs at most half a minute, not the
  # deploy (asked again with the paths, the target is sent the list to fetch, and the runner
  # copies what it still lacks). Why, in stderr's last line.
  bound=''
  command -v timeout >/dev/null 2>&1 && bound='timeout 30'
  if nix-store --check-validity "$top" >/dev/null 2>&1; then
    new=$(nix-store -qR "$top") || exit 4
  elif [ "$cache" = - ] || [ "$cache" = unanswered ]; then
    # A deploy user's gate listed it from the cache, as its user (nixos/deploy-user/gate.sh); none
    # when it could not ("unanswered": the cache did not answer it).
    new=$(cat)
    if [ -z "$new" ]; then
      [ "$cache" = - ] && echo 'closure unknown' || echo 'closure unknown unanswered'
      exit 0
    fi
  else
    # Its warnings and errors interleaved with the paths: the paths are the lines that are ones.
    new='' unanswered=''
    if said=$($bound nix --extra-experimental-features nix-command path-info --recursive --store "$cache" \
      --option connect-timeout 5 --option stalled-download-timeout 10 --option download-attempts 1 "$top" 2>&1); then
      new=$(printf '%s\n' "$said" | grep '^/nix/store/')
    elif [ $? = 124 ]; then
      said='listing the closure from the cache took over 30 s'
    fi
    # A download that failed below HTTP (curl's own error: no connection, no name, nothing for
    # 10 s): the cache did not answer. An HTTP error is an answer (a 403, a 5xx: quick to get again).
    case $said in
      *'HTTP error'*) ;;
      *'unable to download'*) unanswered=' unanswered' ;;
    esac
    if [ -z "$new" ]; then
      printf '%s\n' "$said" | grep -v '^/nix/store/' | tail -n 1 >&2
      echo "closure unknown$unanswered"
      exit 0
    fi
  fi
  new=$(printf '%s\n' "$new" | LC_ALL=C sort -u)
  printf 'closure %s %s\n' "$(printf '%s\n' "$new" | wc -l)" "$(printf '%s\n' "$new" | sha256sum)"
fi
# shellcheck disable=SC2086 # the store paths, one word each (set -f: no globbing)
missing=$(nix-store --check-validity --print-invalid $new) || exit 4
if [ -n "$cache" ]; then
  places missing "$missing"
elif [ -n "$missing" ]; then printf '%s\n' "$missing" | sed 's/^/missing /'; fi
running=$(nix-store -qR /run/current-system 2>/dev/null) && [ -n "$running" ] || exit 0
# Each list after a line "--" (never a store path): the missing paths, the new closure, the running one.
differ=$({ printf '%s\n' "$missing"; echo --; printf '%s\n' "$new"; echo --; printf '%s\n' "$running"; } | awk '
  $0 == "--" { part++; next }
  part == 0 { m[$0] = 1; next }
  part == 1 { if ($0 != "") n[$0] = 1; next }
  { r[$0] = 1; if (!($0 in n)) print "only " $0 }
  END { for (p in n) if (!(p in r) && !(p in m)) print "new " p }') || exit 0
only=$(printf '%s\n' "$differ" | sed -n 's/^only //p')
if [ -n "$only" ]; then
  # shellcheck disable=SC2086 # one store path per word
  sizes=$(nix-store -q --size $only) || exit 0
fi
echo '--running--'
printf 'count %s\n' "$(printf '%s\n' "$running" | wc -l)"
if [ -n "$cache" ]; then
  places new "$(printf '%s\n' "$differ" | sed -n 's/^new //p')"
else
  printf '%s\n' "$differ" | grep '^new ' || true
fi
[ -z "$only" ] || { printf '%s\n' "$only"; echo --; printf '%s\n' "$sizes"; } | awk '
  $0 == "--" { second = 1; next }
  !second { p[++n] = $0; next }
  { print "only " p[++i] " " $0 }'
