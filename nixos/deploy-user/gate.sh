# nix-deploy-action's gate: the forced command of the deploy user's SSH key (deploy-user.nix). It
# runs only the action's own verbs, with the values as arguments, never through a shell: the
# command line is "nix-deploy-action-gate VERB _B64 ..." (each argument base64, behind an
# underscore so that an empty one is a word too), split on spaces with globbing off. What a deploy
# needs as root goes to nda-root through sudo (the one command the sudo rule allows), which checks
# every argument again; importing store paths runs here, as the deploy user, an untrusted user of
# the Nix daemon, which accepts only paths signed by a key it trusts, and so does reading a deploy
# plan's binary cache (the survey's listing of the closure, the substitution).
# The placeholders (@…@) are filled in by deploy-user.nix (and by the testbed, with the same script).
# shellcheck shell=sh
set -f
# shellcheck disable=SC2123 # PATH is set on purpose: the module's tools only
PATH=@path@
export PATH
umask 077
# Where imports are unpacked: the deploy user's own directory on the store's disk, not a small /tmp.
TMPDIR=@tmpdir@
export TMPDIR
refuse() {
  echo "nix-deploy-action-gate: refused: $*; this key runs only nix-deploy-action's own steps (services.nix-deploy-action.deployUser)" >&2
  exit 64
}
IFS=' '
# shellcheck disable=SC2086 # split on spaces, no globbing (set -f)
set -- ${SSH_ORIGINAL_COMMAND:-}
unset IFS
[ "${1:-}" = nix-deploy-action-gate ] || refuse "${SSH_ORIGINAL_COMMAND:-a login shell}"
[ $# -ge 2 ] || refuse "no verb"
verb=$2
shift 2
# Each argument decoded in place (a value never meets a shell's parser).
n=$#
while [ "$n" -gt 0 ]; do
  w=$1
  shift
  n=$((n - 1))
  case $w in _*) w=${w#_} ;; *) refuse "an argument that is not _BASE64" ;; esac
  case $w in *[!A-Za-z0-9+/=]*) refuse "an argument that is not _BASE64" ;; esac
  # The x keeps trailing newlines that command substitution would drop; values with one are refused.
  v=$(printf '%s' "$w" | base64 -d && echo x) || refuse "an argument that is not _BASE64"
  v=${v%x}
  case $v in *'
'*) refuse "an argument with a line break" ;; esac
  set -- "$@" "$v"
done
scripts=@scripts@
# is_store_path: common.sh, put in front of this script.
# One store path per line on stdin, each checked (all of them before any is used), for the
# scripts that read them there.
store_paths_in() {
  paths=$(cat)
  for p in $paths; do is_store_path "$p" || refuse "a store path that is not one"; done
  printf '%s\n' "$paths"
}
# A binary cache a deploy plan names (src/nix/store-uri.ts, the same checks): HTTP(S) or S3, the
# characters it takes only, and only the settings publish-to takes (none that Nix would trust or
# write elsewhere by).
cache_uri() {
  case $1 in http://?* | https://?* | s3://?*) ;; *) return 1 ;; esac
  case $1 in *[!][A-Za-z0-9._~:/?\&=%@+,-]*) return 1 ;; esac
  case $1 in *\?*) q=${1#*\?} ;; *) q='' ;; esac
  IFS='&'
  # shellcheck disable=SC2086 # split on &, no globbing (set -f)
  set -- $q
  unset IFS
  for pair; do
    [ -n "$pair" ] || continue
    case ${pair%%=*} in
      # STORE_SETTINGS (a unit test checks they agree)
      region | endpoint | scheme | profile | priority | want-mass-query | compression | compression-level | \
        parallel-compression | narinfo-compression | ls-compression | log-compression | write-nar-listing | \
        multipart-upload | buffer-size) ;;
      *) return 1 ;;
    esac
  done
}
# A directory of this call's own under the deploy user's (removed when the gate ends), with Nix's
# caches in it: the deploy user has no home Nix may write to.
work_dir() {
  tmp=$(mktemp -d "@tmpdir@/nda-gate.XXXXXX") || exit 70
  trap 'rm -rf "$tmp"' EXIT
  HOME=$tmp/home XDG_CACHE_HOME=$tmp/home/.cache
  export HOME XDG_CACHE_HOME
  mkdir -p "$XDG_CACHE_HOME"
}
case $verb in
  version)
    # The protocol of these verbs and the hash of the scripts they run (src/target/scripts).
    echo "nix-deploy-action-gate @protocol@ @scriptsHash@"
    ;;
  import)
    # stdin: a tar of a binary cache (narinfos signed by the deploy's key, NARs), unpacked into a
    # directory of the deploy user's own; every path it holds is copied into the store through the
    # Nix daemon as this untrusted user, so the daemon refuses a path not signed by a key it
    # trusts. Then prints which of them are still missing (none unless something failed).
    [ $# = 0 ] || refuse "import with arguments"
    work_dir
    mkdir "$tmp/cache"
    tar -x -C "$tmp/cache" --no-same-owner --no-same-permissions -f - || {
      echo "nix-deploy-action-gate: the stream is not a tar of a binary cache" >&2
      exit 65
    }
    # A binary cache is directories and regular files only.
    [ -z "$(find "$tmp/cache" ! -type f ! -type d | head -n 1)" ] || refuse "a binary cache with links or devices in it"
    set +f
    paths=$(sed -n 's/^StorePath: //p' "$tmp"/cache/*.narinfo 2>/dev/null)
    set -f
    [ -n "$paths" ] || { echo "nix-deploy-action-gate: the binary cache holds no store path" >&2; exit 65; }
    for p in $paths; do is_store_path "$p" || refuse "a narinfo whose StorePath is not a store path"; done
    # shellcheck disable=SC2086 # one store path per word
    if ! out=$(nix --extra-experimental-features nix-command copy --no-recursive --from "file://$tmp/cache" $paths 2>&1); then
      printf '%s\n' "$out" >&2
      case $out in
        *ignature*) echo "nix-deploy-action-gate: this target imports only store paths signed by @keyName@ (nix.settings.trusted-public-keys); sign them with its secret key (the action's signing-key)" >&2 ;;
      esac
      exit 65
    fi
    # Not exec: the EXIT trap removes the unpacked cache.
    # shellcheck disable=SC2086
    nix-store --check-validity --print-invalid $paths
    ;;
  query-missing | substitute)
    # substitute takes a deploy plan's binary cache: copied from as this user, so the daemon takes
    # only the paths signed by a key it trusts (a substituter this user names would be ignored).
    if [ "$verb" = substitute ] && [ $# = 1 ]; then
      cache_uri "$1" || refuse "a binary cache that is not http://, https:// or s3:// with only the settings publish-to takes"
    else
      [ $# = 0 ] || refuse "$verb takes no arguments (substitute: at most a binary cache's URI)"
    fi
    paths=$(store_paths_in) || exit $?
    work_dir
    printf '%s\n' "$paths" | sh -c "$(cat "$scripts/$verb.sh")" sh "$@"
    ;;
  survey)
    # With a deploy plan's binary cache (a tenth value), the new closure is listed from it here, as
    # this user (nda-root fetches nothing a deploy key names), and handed to nda-root on stdin with
    # "-" in its place: it answers by reference. Listed before nda-root takes the lock, bounded as
    # survey.sh bounds its own listing (half a minute). A closure it could not list, or a listing
    # with anything but store paths in it, goes as none ("closure unknown": the runner sends the
    # paths), never as a refusal.
    if [ $# = 10 ]; then
      cache_uri "${10}" || refuse "a binary cache that is not http://, https:// or s3:// with only the settings publish-to takes"
      is_store_path "$2" || refuse "a toplevel that is not a store path"
      [ -z "$(head -c 1)" ] || refuse "a survey by reference with store paths on stdin"
      top=$2 cache=${10}
      set -- "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9" -
      work_dir
      listing=''
      # nda-root lists a system the store has from the store.
      if ! nix-store --check-validity "$top" >/dev/null 2>&1; then
        if listing=$(timeout 30 nix --extra-experimental-features nix-command path-info --recursive --store "$cache" \
          --option connect-timeout 5 --option stalled-download-timeout 10 --option download-attempts 1 "$top" 2>"$tmp/err"); then
          for p in $listing; do is_store_path "$p" || { echo "the cache listed what is not a store path" >"$tmp/err"; listing=''; break; }; done
        else
          [ $? != 124 ] || echo "listing the closure from the cache took over 30 s" >"$tmp/err"
          listing=''
          # As survey.sh tells it: a download that failed below HTTP (no connection, nothing for
          # 10 s) is a cache that did not answer; "unanswered" in the listing's place tells the
          # runner not to have this Pi fetch from it.
          if ! grep -q 'HTTP error' "$tmp/err" && grep -q 'unable to download' "$tmp/err"; then
            set -- "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9" unanswered
          fi
        fi
        [ -n "$listing" ] || tail -n 1 "$tmp/err" >&2
      fi
      # Not exec: the EXIT trap removes this call's directory. The status is nda-root's.
      printf '%s\n' "$listing" | @sudo@ -n @root@ survey "$@"
      exit $?
    fi
    exec @sudo@ -n @root@ "$verb" "$@"
    ;;
  lock | probe | prepare-agent | start-agent | follow | decide | abandon | \
    remove-agent-dir | health | wrap-up | list-generations | delete-generations | remove-gc-root | \
    reboot | boot-trial | upload-key | plan-record)
    exec @sudo@ -n @root@ "$verb" "$@"
    ;;
  *) refuse "verb $verb" ;;
esac
