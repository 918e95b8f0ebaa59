# nda-root: what nix-deploy-action's gate (gate.sh) may do as root, through the one sudo rule
# deploy-user.nix writes. Every argument is checked again here (the gate is the deploy user's, so
# whoever holds its SSH key reaches this with any values): paths only in the action's own places,
# store paths only as store paths, and a system is set, activated or booted only when it is one
# this machine already has (running, booted, a generation: root put it there) or a new NixOS
# system signed by the deploy's key alone, not content-addressed (those need no signature), with
# this module in it (without it the next deploy could not log in). Then it runs the module's own
# copy of the action's scripts (src/target/scripts, of the same release), never text from the client.
# usage: nda-root VERB ARG...   (placeholders @…@ filled in by deploy-user.nix, or by the testbed)
# shellcheck shell=sh
set -f
# Root's usual mask, whatever the deploy user's (an activation creates files others must read).
umask 022
# Not the deploy user's directory or home (sudo may pass either on).
cd / || exit 70
HOME=/root
export HOME
# shellcheck disable=SC2123 # PATH is set on purpose: the module's tools only
PATH=@path@
export PATH
S=@scripts@
KEY='@publicKey@'
KEY_DIRS='@keyDirs@'
LOCK_DIR=/nix/var/nix-deploy-action/lock
RUN_BASE=/run/nix-deploy-action
GC_BASE=/nix/var/nix/gcroots/nix-deploy-action
P=/nix/var/nix/profiles/system
CHECKS=/run/current-system/etc/nix-deploy-action/health-checks
nixc() { nix --extra-experimental-features nix-command "$@"; }

refuse() {
  echo "nda-root: refused: $*" >&2
  exit 64
}
token() { case $1 in '' | .* | -* | *[!A-Za-z0-9._-]*) return 1 ;; esac; }
num() { case $1 in '' | *[!0-9]*) return 1 ;; esac; }
under() { case $2 in "$1"/*) token "${2#"$1"/}" ;; *) return 1 ;; esac; }
agent_dir() { under "$RUN_BASE" "$1" || refuse "an activation directory that is not $RUN_BASE/NAME"; }
gc_root() { under "$GC_BASE" "$1" || refuse "a GC root that is not $GC_BASE/NAME"; }
# is_store_path: common.sh, put in front of this script.
# lock_args DIR ID LEASE: no lock (all empty) or the action's lock.
lock_args() {
  if [ -z "$1" ]; then [ -z "$2" ] || refuse "a lock id without a lock"; return 0; fi
  [ "$1" = "$LOCK_DIR" ] || refuse "a lock other than $LOCK_DIR"
  token "$2" || refuse "a lock id that is not a plain name"
  [ -z "$3" ] || num "$3" || refuse "a lease that is not a number"
}
# The store paths on stdin (one per line), all checked before any is used; printed back.
stdin_store_paths() {
  paths=$(cat)
  for p in $paths; do is_store_path "$p" || refuse "a store path that is not one: $p"; done
  printf '%s\n' "$paths"
}
# A deploy plan's record (src/target/plan-record.ts) from stdin, printed back once checked: key=value
# lines without control characters, ending with end=1, at most 8 KiB (the report job checks every
# value again). Refuses anything else (call it as record=$(checked_record) || exit 64: in a
# command substitution, refuse ends only that subshell), before anything is written.
checked_record() {
  record=$(head -c 8193)
  [ "$(printf '%s' "$record" | wc -c)" -le 8192 ] || refuse "a plan record over 8 KiB"
  if printf '%s\n' "$record" | LC_ALL=C grep -qv '^[a-z][a-z-]*=[^[:cntrl:]]*$'; then
    refuse "a plan record line that is not key=value"
  fi
  [ "${record##*
}" = end=1 ] || refuse "a plan record that does not end with end=1"
  printf '%s\n' "$record"
}
# A system this machine may be set to: one it has (running, booted, a generation), or a new one.
allowed_system() {
  if ! is_store_path "$1" || [ ! -x "$1/bin/switch-to-configuration" ]; then refuse "$1 is not a NixOS system in the store"; fi
  [ "$1" = "$(readlink -f /run/current-system)" ] && return 0
  [ "$1" = "$(readlink -f /run/booted-system)" ] && return 0
  set +f
  for l in "$P"-*-link; do [ "$(readlink -f "$l")" = "$1" ] && { set -f; return 0; }; done
  set -f
  new_system "$1"
}
# A new system: valid, input-addressed, signed by the deploy's key (checked against that key
# alone: not every key the daemon trusts), with this module.
new_system() {
  nix-store --check-validity "$1" 2>/dev/null || refuse "$1 is not in the store"
  # Input-addressed, said outright: the one path's "ca" is null (a content-addressed path needs no
  # signature; any user can add one). Anything else, a format this does not know included, is refused.
  info=$(nixc path-info --json "$1") || refuse "cannot read the path info of $1"
  case $info in *'"ca":null'* | *'"ca": null'*) ;; *) refuse "$1 is content-addressed (such paths need no signature), or its path info is not one this knows" ;; esac
  nixc store verify --no-contents --sigs-needed 1 --option trusted-public-keys "$KEY" "$1" 2>/dev/null ||
    refuse "$1 is not signed by ${KEY%%:*} (the deploy's signing-key), nor a system this machine has"
  [ -f "$1/etc/nix-deploy-action/deploy-user" ] ||
    refuse "$1 does not have services.nix-deploy-action.deployUser (the next deploy could not log in)"
}
# run FILES ARG...: the module's copies of the scripts, joined, run with ARGs.
run() {
  script=''
  for f in $1; do script="$script$(cat "$S/$f")
"; done
  shift
  exec sh -c "$script" sh "$@"
}

[ $# -ge 1 ] || refuse "no verb"
verb=$1
shift
case $verb in
  probe | list-generations)
    [ $# = 0 ] || refuse "$verb with arguments"
    case $verb in
      probe) run "probe.sh probe-command.sh" ;;
      list-generations) run list-generations.sh ;;
    esac
    ;;
  survey)
    # A tenth value, "-": the closure on stdin is the gate's listing from a deploy plan's cache
    # (gate.sh), answered by reference; "unanswered": the gate could not list it, the cache did
    # not answer. Never a cache to fetch from: root fetches nothing a deploy key names.
    [ $# = 9 ] || { [ $# = 10 ] && { [ "${10}" = - ] || [ "${10}" = unanswered ]; }; } ||
      refuse "survey takes 9 arguments (and a tenth: - or unanswered)"
    gc_root "$1"
    is_store_path "$2" || refuse "a toplevel that is not a store path"
    case $3 in switch | boot | test | never) ;; *) refuse "unchanged-when $3" ;; esac
    case $4 in yes | no) ;; *) refuse "release $4" ;; esac
    { num "$5" && [ "$5" -ge 60 ]; } || refuse "a GC root age under an hour (other runs' roots would go)"
    lock_args "$6" "$7" "$8"
    paths=$(stdin_store_paths) || exit $?
    printf '%s\n' "$paths" | run "lock.sh probe.sh survey.sh" "$@"
    ;;
  lock)
    [ $# = 5 ] || refuse "lock takes 5 arguments"
    case $1 in acquire | renew | release) ;; *) refuse "lock $1" ;; esac
    [ -n "$2" ] || refuse "lock without a lock"
    lock_args "$2" "$3" "$4"
    run "lock.sh lock-command.sh" "$@" </dev/null
    ;;
  prepare-agent)
    [ $# = 1 ] || refuse "prepare-agent takes 1 argument"
    agent_dir "$1"
    # Not under an agent that runs (or ran) there.
    [ ! -e "$1/started" ] || refuse "an activation directory whose agent was started"
    # The agent is the module's copy (the action's own is not read: stdin is ignored).
    agent=''
    for f in lock.sh wake.sh agent.sh; do agent="$agent$(cat "$S/$f")
"; done
    printf '%s' "$agent" | sh -c "$(cat "$S/prepare-agent.sh")" sh "$1"
    ;;
  start-agent)
    prev='' want=no top='' prev_gen='' rb_gen='' rb_new=0
    for a; do
      if [ "$want" = no ]; then prev=$a want=yes; continue; fi
      want=no
      case $prev in
        --dir | --rollback-of-dir) agent_dir "$a" ;;
        --toplevel | --prev-current | --prev-profile)
          allowed_system "$a"
          [ "$prev" != --toplevel ] || top=$a
          ;;
        --action) case $a in switch | boot | test | dry-activate) ;; *) refuse "action $a" ;; esac ;;
        --activation-timeout | --wait-seconds | --prev-generation | --lease)
          num "$a" || refuse "$prev $a"
          [ "$prev" != --prev-generation ] || prev_gen=$a
          ;;
        --on-timeout) case $a in rollback | keep) ;; *) refuse "on-timeout $a" ;; esac ;;
        --lock-dir) [ "$a" = "$LOCK_DIR" ] || refuse "a lock other than $LOCK_DIR" ;;
        --lock-id) token "$a" || refuse "a lock id that is not a plain name" ;;
        --rollback-of-generation) { [ "$a" = - ] || num "$a"; } || refuse "$prev $a"; rb_gen=$a ;;
        --rollback-created-new) case $a in 0 | 1) rb_new=$a ;; *) refuse "$prev $a" ;; esac ;;
        *) refuse "option $prev" ;;
      esac
    done
    [ "$want" = no ] || refuse "option $prev without a value"
    # Undoing a deploy deletes the generation it made: only a generation newer than the one to go
    # back to, holding the system being undone.
    if [ "$rb_new" = 1 ]; then
      if ! num "$rb_gen" || [ -z "$prev_gen" ] || [ "$rb_gen" -le "$prev_gen" ] ||
        [ "$(readlink -f "$P-$rb_gen-link")" != "$top" ]; then
        refuse "a rollback that would delete generation $rb_gen (not one newer than --prev-generation holding --toplevel)"
      fi
    fi
    run "lock.sh start-agent.sh" "$@" </dev/null
    ;;
  follow)
    [ $# = 5 ] || refuse "follow takes 5 arguments"
    agent_dir "$1"
    for n in "$2" "$3" "$4"; do num "$n" || refuse "follow's numbers"; done
    case $5 in 0 | 1) ;; *) refuse "follow $5" ;; esac
    run "wake.sh follow.sh" "$@" </dev/null
    ;;
  decide)
    # With 5: then a follow poll's answer (its OFFSET MAX WAIT), as follow's.
    [ $# = 2 ] || [ $# = 5 ] || refuse "decide takes 2 or 5 arguments"
    agent_dir "$1"
    case $2 in confirm | abort) ;; *) refuse "decision $2" ;; esac
    if [ $# = 5 ]; then for n in "$3" "$4" "$5"; do num "$n" || refuse "decide's numbers"; done; fi
    run "wake.sh decide.sh follow.sh" "$@" </dev/null
    ;;
  abandon | remove-agent-dir)
    [ $# = 1 ] || refuse "$verb takes 1 argument"
    agent_dir "$1"
    if [ "$verb" = abandon ]; then run abandon.sh "$1" </dev/null; fi
    exec rm -rf "$1"
    ;;
  wrap-up)
    # With 6: the deploy plan's record on stdin too, written under the lock given last.
    [ $# = 4 ] || [ $# = 6 ] || refuse "wrap-up takes 4 or 6 arguments"
    [ -z "$1" ] || agent_dir "$1"
    [ -z "$2" ] || gc_root "$2"
    lock_args "$3" "$4" ''
    if [ $# = 4 ]; then
      run "lock.sh probe.sh record.sh wrap-up.sh" "$@" </dev/null
    else
      [ -n "$5" ] || refuse "a plan record without a lock"
      lock_args "$5" "$6" ''
      record=$(checked_record) || exit 64
      printf '%s\n' "$record" | run "lock.sh probe.sh record.sh wrap-up.sh" "$@"
    fi
    ;;
  remove-gc-root)
    [ $# = 1 ] || refuse "remove-gc-root takes 1 argument"
    gc_root "$1"
    exec rm -f "$1"
    ;;
  delete-generations)
    [ $# -ge 1 ] || refuse "delete-generations without generations"
    for g; do num "$g" || refuse "a generation that is not a number: $g"; done
    exec nix-env -p "$P" --delete-generations "$@"
    ;;
  health)
    # Only a check the running system lists (services.nix-deploy-action.deployUser.healthChecks),
    # exactly as written there.
    [ $# = 1 ] || refuse "health takes 1 argument"
    listed=no
    if [ -f "$CHECKS" ]; then
      while IFS= read -r c; do [ "$c" = "$1" ] && listed=yes; done <"$CHECKS"
    fi
    [ "$listed" = yes ] || refuse "a health check the running system does not list in services.nix-deploy-action.deployUser.healthChecks: $1"
    exec sh -c "$1" </dev/null
    ;;
  reboot)
    # Plain, or on trial: NEW is what the profile holds now (the activation set it), PREVIOUS a
    # system it may go back to, ONCE the one-shot file this machine names.
    case $# in
      0) ;;
      6 | 10)
        [ "$1" = "$(readlink -f "$P")" ] || refuse "a boot trial of $1, which is not the system profile's"
        allowed_system "$2"
        [ -z "$3" ] || num "$3" || refuse "a generation that is not a number"
        num "$4" || refuse "a trial window that is not a number"
        [ -z "$5" ] || num "$5" || refuse "a login window that is not a number"
        if [ -n "$6" ]; then
          o='' && { IFS= read -r o </etc/nix-deploy-action/boot-once; } 2>/dev/null
          [ "$6" = "$o" ] || refuse "a one-shot boot file other than this machine's"
        fi
        if [ $# = 10 ]; then
          lock_args "$7" "$8" "$9"
          num "${10}" || refuse "a lock window that is not a number"
        fi
        ;;
      *) refuse "reboot takes 0, 6 or 10 arguments" ;;
    esac
    run "lock.sh reboot.sh" "$@" </dev/null
    ;;
  boot-trial)
    [ $# = 1 ] || refuse "boot-trial takes 1 argument"
    case $1 in check-in | confirm | reject | fell-back) ;; *) refuse "boot-trial $1" ;; esac
    run boot-trial-steps.sh "$1" </dev/null
    ;;
  upload-key)
    # Only into the directories the module names (deployUser.keyDirs), as upload-key.sh checks them.
    [ $# = 5 ] || refuse "upload-key takes 5 arguments"
    ok=no
    for d in $KEY_DIRS; do [ "$1" = "$d" ] && ok=yes; done
    [ "$ok" = yes ] || refuse "a key directory other than those in services.nix-deploy-action.deployUser.keyDirs ($KEY_DIRS): $1"
    token "$2" || refuse "a key name that is not a plain name"
    for u in "$3" "$4"; do case $u in '' | -* | *[!a-z0-9_-]*) refuse "an owner or group that is not a plain name: $u" ;; esac; done
    # Permissions only: no setuid, setgid or sticky bit on a file whose content the client chose.
    case $5 in [0-7][0-7][0-7] | 0[0-7][0-7][0-7]) ;; *) refuse "a mode that is not octal permissions (no setuid, setgid or sticky)" ;; esac
    run upload-key.sh "$@"
    ;;
  plan-record)
    [ $# = 2 ] || refuse "plan-record takes 2 arguments"
    [ -n "$1" ] || refuse "plan-record without a lock"
    lock_args "$1" "$2" ''
    record=$(checked_record) || exit 64
    printf '%s\n' "$record" | run "lock.sh record.sh plan-record.sh" "$@"
    ;;
  *) refuse "verb $verb" ;;
esac
