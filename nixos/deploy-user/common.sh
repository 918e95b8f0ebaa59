# shellcheck shell=sh
# nix-deploy-action's deploy user: what the gate (gate.sh) and nda-root (root.sh) both need, put in
# front of each by deploy-user.nix (and the testbed).
# A store path by Nix's grammar (a 32-character hash in Nix's base32, a dash, a name of letters,
# digits and +-._?=), and not a derivation: a substitute or import of one could build it, and one
# is never deployed.
is_store_path() {
  case $1 in
    /nix/store/*/* | /nix/store/*..* | *.drv) return 1 ;;
    /nix/store/????????????????????????????????-?*)
      h=${1#/nix/store/} && h=${h%%-*}
      [ ${#h} = 32 ] || return 1
      case $h in *[!0-9abcdfghijklmnpqrsvwxyz]*) return 1 ;; esac
      case ${1#/nix/store/} in *[!0-9A-Za-z+._?=-]*) return 1 ;; esac
      ;;
    *) return 1 ;;
  esac
}
